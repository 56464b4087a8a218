package corraltest

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/testenv/require"
	"github.com/corral-vmm/corral/internal/testkernel"
	"github.com/corral-vmm/corral/kvm"
)

// TestMissingKVM: a KVM device that cannot be opened skips the test, or
// fails it when CORRAL_REQUIRE names kvm.
func TestMissingKVM(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "kvm")
	for _, c := range []struct {
		env  string
		fail bool
	}{{"", false}, {"root", false}, {"root,kvm", true}, {"kvmm", true}} {
		t.Setenv(RequireEnv, c.env)
		var r require.Recorder
		after := false
		r.Run(func(tb testing.TB) { mustHaveKVM(tb, missing); after = true })
		if after {
			t.Errorf("%s=%q: the test went on without KVM", RequireEnv, c.env)
		}
		if c.fail != (r.FailMsg != "") || c.fail == (r.SkipMsg != "") {
			t.Errorf("%s=%q: skipped %q, failed %q; want fail=%v", RequireEnv, c.env, r.SkipMsg, r.FailMsg, c.fail)
		}
		if msg := r.SkipMsg + r.FailMsg; !c.fail && !strings.Contains(msg, missing) {
			t.Errorf("%s=%q: message %q does not name %s", RequireEnv, c.env, msg, missing)
		}
	}
}

func TestKernelPath(t *testing.T) {
	t.Setenv(KernelEnv, "")
	t.Setenv(RequireEnv, "kvm")
	var r require.Recorder
	r.Run(func(tb testing.TB) { kernelPath(tb, "") })
	if r.SkipMsg == "" || !strings.Contains(r.SkipMsg, KernelEnv) {
		t.Errorf("no kernel: skipped %q, failed %q; want a skip naming $%s", r.SkipMsg, r.FailMsg, KernelEnv)
	}
	// Required (as tests/tcgkvm does when it ships a kernel): a failure.
	t.Setenv(RequireEnv, "kvm,kernel")
	r = require.Recorder{}
	r.Run(func(tb testing.TB) { kernelPath(tb, "") })
	if r.FailMsg == "" || !strings.Contains(r.FailMsg, KernelEnv) {
		t.Errorf("no kernel, %s=kvm,kernel: skipped %q, failed %q; want a failure naming $%s", RequireEnv, r.SkipMsg, r.FailMsg, KernelEnv)
	}
	gone := filepath.Join(t.TempDir(), "bzImage")
	t.Setenv(KernelEnv, gone)
	r = require.Recorder{}
	r.Run(func(tb testing.TB) { kernelPath(tb, "") })
	if r.FailMsg == "" || !strings.Contains(r.FailMsg, gone) {
		t.Errorf("$%s names a missing file: skipped %q, failed %q; want a failure", KernelEnv, r.SkipMsg, r.FailMsg)
	}
	k := testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047})
	r = require.Recorder{}
	var got string
	r.Run(func(tb testing.TB) { got = kernelPath(tb, k) })
	if got != k || r.SkipMsg+r.FailMsg != "" {
		t.Errorf("configured kernel: %q (skip %q, fail %q)", got, r.SkipMsg, r.FailMsg)
	}
}

func TestAgentPathNamed(t *testing.T) {
	gone := filepath.Join(t.TempDir(), "agent")
	t.Setenv(AgentEnv, gone)
	var r require.Recorder
	r.Run(func(tb testing.TB) { agentPath(tb, "") })
	if !strings.Contains(r.FailMsg, gone) {
		t.Errorf("$%s names a missing file: failed %q", AgentEnv, r.FailMsg)
	}
}

// TestCachedAgent builds the agent once and reuses it while it is newer
// than the test binary.
func TestCachedAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("skipping: building the agent needs the go command: %v", err)
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), buildAgentTimeout)
	defer cancel()
	p, err := cachedAgent(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := cachedAgent(ctx, dir)
	if err != nil || p2 != p {
		t.Fatalf("second cachedAgent = %q, %v", p2, err)
	}
	if fi2, _ := os.Stat(p); !fi2.ModTime().Equal(fi.ModTime()) {
		t.Errorf("the agent was rebuilt although newer than the test binary")
	}
	// Older than the test binary: rebuilt.
	old := time.Unix(1, 0)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	if _, err := cachedAgent(ctx, dir); err != nil {
		t.Fatal(err)
	}
	if fi3, _ := os.Stat(p); !fi3.ModTime().After(old) {
		t.Errorf("a stale agent was reused")
	}
}

// recordingOS is a fakeOS that notes when the leak check listed the
// descriptors.
type recordingOS struct {
	*fakeOS
	lists int
}

func (r *recordingOS) list() (map[int]string, error) { r.lists++; return r.fakeOS.list() }

// TestNewLogsAroundCreation keeps corral.New to what the leak check relies
// on: it derives its logger with the "vm" attribute before opening the KVM
// device (here a missing one, so New fails right there).
func TestNewLogsAroundCreation(t *testing.T) {
	f := &recordingOS{fakeOS: newFakeOS()}
	check := newLeakCheck(f, nil)
	tb := &fakeTB{}
	cfg := corral.Config{
		Kernel:    testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047}),
		Memory:    64 << 20,
		KVMDevice: filepath.Join(t.TempDir(), "kvm"),
		Logger:    newWatchLogger(nil, check, newConsole(tb, nil)),
	}
	_, err := corral.New(cfg)
	if !errors.Is(err, kvm.ErrUnavailable) {
		t.Fatalf("New with a missing KVM device: %v, want kvm.ErrUnavailable", err)
	}
	if f.lists != 1 || f.locked != 1 {
		t.Fatalf("New did not mark the start of creation: %d listings, lock held %d", f.lists, f.locked)
	}
	check.abort()
	if f.locked != 0 {
		t.Errorf("abort left the lock held")
	}
}

// TestWatchLogger: records go on to the caller's logger; without one,
// warnings reach the test log and vm.created drives the check.
func TestWatchLogger(t *testing.T) {
	f := newFakeOS()
	check := newLeakCheck(f, nil)
	tb := &fakeTB{}
	var buf strings.Builder
	user := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	log := newWatchLogger(user, check, newConsole(tb, nil)).With(vmAttr, "m1")
	machineFDs(f, 3, "t", "/i")
	log.Info(createdMsg, "id", "x")
	log.Warn("guest gave a bad descriptor", "n", 3)
	if !check.done || len(check.pins) != 4 { // the disk is not among its paths
		t.Errorf("vm.created did not pin the machine's descriptors: done %v, %d pins", check.done, len(check.pins))
	}
	if s := buf.String(); strings.Contains(s, createdMsg) || !strings.Contains(s, "vm=m1") || !strings.Contains(s, "bad descriptor") {
		t.Errorf("the caller's logger got %q; want only the warning, with vm=m1", s)
	}
	if len(tb.logged()) != 0 {
		t.Errorf("logged to the test although the caller has a logger: %q", tb.logged())
	}
	check.finish(nil)

	tb = &fakeTB{}
	newWatchLogger(nil, newLeakCheck(newFakeOS(), nil), newConsole(tb, nil)).With(vmAttr, "m2").Warn("virtio-blk: guest gave a bad request", "dev", 1)
	if !hasLine(tb.logged(), `corral: WARN virtio-blk: guest gave a bad request vm=m2 dev=1`) {
		t.Errorf("test log: %q", tb.logged())
	}
}
