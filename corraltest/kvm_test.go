package corraltest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/testenv/require"
	"github.com/corral-vmm/corral/tests/guests"
	"github.com/corral-vmm/corral/tests/linux/kernel"
)

// recordT is a real test that also records what corraltest logs and
// reports, for checks after the subtest (and its cleanup) ended.
type recordT struct {
	*testing.T
	mu   sync.Mutex
	logs []string
	errs []string
}

func (r *recordT) Logf(format string, args ...any) {
	r.T.Helper()
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	r.T.Logf(format, args...)
}

func (r *recordT) Log(args ...any) {
	r.T.Helper()
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprint(args...))
	r.mu.Unlock()
	r.T.Log(args...)
}

func (r *recordT) Errorf(format string, args ...any) {
	r.T.Helper()
	r.mu.Lock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	r.T.Errorf(format, args...)
}

// TestStartMachineT boots the hello test guest (no agent): its console
// reaches the test log and Expect, and the leak check pins the machine's
// KVM descriptors and finds them closed after the machine.
func TestStartMachineT(t *testing.T) {
	mustHaveKVM(t, "")
	k := guests.BuildT(t, "hello")
	r := &recordT{}
	var pins int
	t.Run("boot", func(t *testing.T) {
		r.T = t
		vm := StartMachineT(r, corral.Config{Kernel: k, Cmdline: "exit=0 hello-from-corraltest", Memory: 64 << 20})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		m, err := vm.Expect(ctx, regexp.MustCompile(`cmdline: (.*)`))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(m[1], "hello-from-corraltest") {
			t.Errorf("cmdline line %q", m[0])
		}
		if _, err := vm.Expect(ctx, regexp.MustCompile(`corral-guest: exit 0`)); err != nil {
			t.Fatal(err)
		}
		// The guest has exited: a pattern that never comes ends with it.
		_, err = vm.Expect(ctx, regexp.MustCompile(`never printed`))
		if err == nil || !strings.Contains(err.Error(), "machine ended") || !strings.Contains(err.Error(), "corral-guest: exit 0") {
			t.Errorf("Expect after the guest exited: %v", err)
		}
		vm.check.mu.Lock()
		pins = len(vm.check.pins)
		vm.check.mu.Unlock()
	})
	if t.Failed() {
		return
	}
	if pins < 3 {
		t.Errorf("the leak check pinned %d descriptors, want at least /dev/kvm, kvm-vm and kvm-vcpu:0", pins)
	}
	if hasLine(r.logs, "skipped") || len(r.errs) != 0 {
		t.Errorf("leak check: logs %q, errors %q", r.logs, r.errs)
	}
	if !hasLine(r.logs, "console: corral-guest: hello") {
		t.Errorf("the console did not reach the test log")
	}
}

// TestStartMachineTParallel: machines created at once in one process are
// each attributed their own descriptors (none skips the check, none blames
// another).
func TestStartMachineTParallel(t *testing.T) {
	mustHaveKVM(t, "")
	k := guests.BuildT(t, "hello")
	recs := make([]*recordT, 4)
	t.Run("group", func(t *testing.T) {
		for i := range recs {
			recs[i] = &recordT{}
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				t.Parallel()
				recs[i].T = t
				vm := StartMachineT(recs[i], corral.Config{Kernel: k, Cmdline: "exit=0", Memory: 64 << 20, Name: fmt.Sprint("m", i)})
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				if _, err := vm.Expect(ctx, regexp.MustCompile(`corral-guest: exit 0`)); err != nil {
					t.Fatal(err)
				}
			})
		}
	})
	for i, r := range recs {
		if hasLine(r.logs, "leak check skipped") || len(r.errs) != 0 {
			t.Errorf("machine %d: logs %q, errors %q", i, r.logs, r.errs)
		}
	}
}

// linuxConfig returns a Config for the Linux test kernel: $CORRAL_KERNEL
// (with the host's test-kernel command line), else the test kernel cached for this host,
// with the host's root (the guest's commands are the host's) and, inside
// tests/tcgkvm, the parameters $CORRAL_TCGKVM_CMDLINE adds there. Without
// a kernel the test skips (fails with kernel in $CORRAL_REQUIRE).
func linuxConfig(t *testing.T) Config {
	t.Helper()
	cfg := Config{Root: agentvm.RootHost()}
	extra := os.Getenv("CORRAL_TCGKVM_CMDLINE")
	if k := os.Getenv(KernelEnv); k != "" {
		cmdline, err := kernel.HostCmdline()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Machine = corral.Config{Kernel: k, Cmdline: cmdline}
		return cfg
	}
	if _, err := kernel.Script(); err != nil {
		require.Missing(t, require.Kernel, "no $%s and no source tree to find the test kernel with: %v", KernelEnv, err)
	}
	choice, err := kernel.ChooseHost()
	if err != nil {
		t.Fatal(err)
	}
	bz, _, err := kernel.Find(choice.Patched)
	if errors.Is(err, kernel.ErrNotBuilt) {
		require.Missing(t, require.Kernel, "no $%s and the %s test kernel is not built (%s): %v", KernelEnv, choice.Kind(), choice.BuildHint(), err)
	}
	if err != nil {
		t.Fatal(err)
	}
	cfg.Machine = corral.Config{Kernel: bz, Cmdline: strings.TrimSpace(choice.Cmdline() + " " + extra)}
	return cfg
}

// TestCommand is the package example, run: a command's stdout, stderr and
// exit status come back separately.
func TestCommand(t *testing.T) {
	mustHaveKVM(t, "")
	vm := StartT(t, linuxConfig(t))
	var stdout, stderr strings.Builder
	cmd := vm.Command("sh", "-c", "echo out; echo err >&2; exit 3")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 {
		t.Fatalf("Run: %v, want an *ExitError with status 3", err)
	}
	if stdout.String() != "out\n" || stderr.String() != "err\n" {
		t.Errorf("stdout %q, stderr %q; want \"out\\n\", \"err\\n\"", stdout.String(), stderr.String())
	}
}

// parallelWait bounds how long a machine of TestEightInParallel waits for
// the other seven to be up: eight Linux boots share one emulated CPU in
// tests/tcgkvm (about 10 s each alone there).
const parallelWait = 10 * time.Minute

// TestEightInParallel starts 8 machines under t.Parallel in one test
// binary and runs a command in each while all 8 run: each waits, its
// machine up, until the other seven are up too (TestMain lets 8 tests run
// at once, whatever GOMAXPROCS is).
func TestEightInParallel(t *testing.T) {
	mustHaveKVM(t, "")
	base := linuxConfig(t)
	const n = 8
	var up sync.WaitGroup
	up.Add(n)
	allUp := make(chan struct{})
	go func() { up.Wait(); close(allUp) }()
	t0 := time.Now()
	for i := range n {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			arrived := sync.OnceFunc(up.Done)
			defer arrived() // a machine that failed to start does not hold the others
			cfg := base
			cfg.Machine.Memory = 128 << 20
			cfg.Machine.Cmdline += fmt.Sprintf(" corraltest.n=%d", i)
			cfg.AgentTimeout = parallelWait
			vm := StartT(t, cfg)
			arrived()
			select {
			case <-allUp:
			case <-time.After(parallelWait):
				t.Fatalf("the other machines were not up %v after this one (are 8 tests allowed at once? -test.parallel)", parallelWait)
			}
			out, err := vm.Command("cat", "/proc/cmdline").Output()
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("corraltest.n=%d", i); !strings.Contains(string(out), want) {
				t.Errorf("guest %d: /proc/cmdline %q lacks %s", i, out, want)
			}
		})
	}
	t.Cleanup(func() {
		if !t.Failed() {
			t.Logf("%d machines up at once; all ended %.1f s after the first started", n, time.Since(t0).Seconds())
		}
	})
}
