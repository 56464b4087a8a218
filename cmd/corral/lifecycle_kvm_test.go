package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/inventory"
	"github.com/corral-vmm/corral/tests/guests"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// The end-to-end tests of issue 12 (inventory, control socket, audit
// trail, TTL) through the CLI with real VMMs: the spin test guest runs
// forever and ignores the power-off request (it has no keyboard driver).
// Under TCG (tests/tcgkvm) a boot takes seconds, so waits are generous.

// bootWait bounds how long a test guest may take to boot and be listed.
const bootWait = 90 * time.Second

// runningVM is a `corral run` in this process.
type runningVM struct {
	done       chan int
	out, errs  bytes.Buffer // read only after done
	cancel     context.CancelFunc
	status     int
	statusRead bool
}

// startRun runs `corral run ARGS` on a goroutine; the test's end stops it.
func startRun(t *testing.T, args ...string) *runningVM {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningVM{done: make(chan int, 1), cancel: cancel}
	go func() { r.done <- run2(ctx, append([]string{"run"}, args...), &r.out, &r.errs) }()
	t.Cleanup(func() {
		cancel()
		r.wait(t, 30*time.Second)
	})
	return r
}

// wait returns corral run's status once it has returned, failing the test
// after d.
func (r *runningVM) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	if r.statusRead {
		return r.status
	}
	select {
	case r.status = <-r.done:
		r.statusRead = true
		return r.status
	case <-time.After(d):
		t.Fatalf("corral run did not return within %v", d)
	}
	return 0
}

// waitListed polls `corral ps --json` until the VM named name runs and
// its console log shows the spin guest's line; it returns ps's entry.
func waitListed(t *testing.T, name string, r *runningVM) vmJSON {
	t.Helper()
	deadline := time.Now().Add(bootWait)
	for {
		if vms := psJSON(t, "--filter", "name="+name); len(vms) == 1 && vms[0].State == inventory.Running {
			if _, logs, _ := runCLI(t, "logs", name); strings.Contains(logs, "corral-guest: spinning") {
				return vms[0]
			}
		}
		if r != nil {
			select {
			case st := <-r.done:
				r.status, r.statusRead = st, true
				t.Fatalf("corral run %s ended with status %d before it was listed: %s", name, st, r.errs.String())
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not listed as running with its console log after %v", name, bootWait)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// vmEvents returns the trail's records about the VM id, in order.
func vmEvents(t *testing.T, trail, id string) []audit.Event {
	t.Helper()
	b, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	var evs []audit.Event
	for _, line := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		e, err := audit.Parse(line)
		if err != nil {
			t.Fatalf("trail line %q: %v", line, err)
		}
		if e.VMID == id {
			evs = append(evs, e)
		}
	}
	return evs
}

func eventNames(evs []audit.Event) string {
	var s []string
	for _, e := range evs {
		s = append(s, e.Event)
	}
	return strings.Join(s, ",")
}

// field decodes the JSON field key of e into v.
func field(t *testing.T, e audit.Event, key string, v any) {
	t.Helper()
	raw, ok := e.Fields[key]
	if !ok {
		t.Errorf("%s has no %q: %v", e.Event, key, e.Fields)
		return
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Errorf("%s %s=%s: %v", e.Event, key, raw, err)
	}
}

// TestTTLEndsForeverGuest: `corral run --name --label --ttl 2s` of a guest
// that runs forever is listed with its name, labels and TTL, and ends by
// its TTL: asked to power off (spin ignores it), stopped TTLStopTimeout
// later; ps -a shows it ended, and the trail holds created, started,
// expired, stopping (via ttl), ended.
func TestTTLEndsForeverGuest(t *testing.T) {
	testenv.MustHaveKVM(t)
	_, trail := fakeInventory(t)
	r := startRun(t, "--kernel", guests.BuildT(t, "spin"), "--memory", "64M", "--name", "ttl-spin", "--label", "a=b", "--label", "team=ci", "--ttl", "2s")
	v := waitListed(t, "ttl-spin", r)
	if v.Labels["a"] != "b" || v.Labels["team"] != "ci" || v.Record == nil || time.Duration(v.Record.TTL) != 2*time.Second || v.TTLLeft == nil || *v.TTLLeft > 2 {
		t.Errorf("ps --json while it runs: labels %v, record %+v, ttl left %v", v.Labels, v.Record, v.TTLLeft)
	}
	if st := r.wait(t, 2*time.Second+corral.TTLStopTimeout+bootWait); st != exitOK {
		t.Errorf("corral run: status %d, want %d (stopped, no signal): %s", st, exitOK, r.errs.String())
	}
	ended := psJSON(t, "-a", "--filter", "name=ttl-spin")
	if len(ended) != 1 || ended[0].State != inventory.Ended || ended[0].Labels["a"] != "b" || ended[0].Record == nil ||
		time.Duration(ended[0].Record.TTL) != 2*time.Second || ended[0].Record.Ended == nil || ended[0].Record.Ended.Reason != "stopped" {
		t.Fatalf("ps -a --json after the TTL: %+v", ended)
	}
	if !strings.Contains(ended[0].Record.Ended.Detail, "did not power off within "+corral.TTLStopTimeout.String()) || !strings.Contains(ended[0].Record.Ended.Detail, "via ttl") {
		t.Errorf("end detail %q: want the TTL's stop after 10s", ended[0].Record.Ended.Detail)
	}
	evs := vmEvents(t, trail, v.ID)
	if got := eventNames(evs); got != "vm.created,vm.started,vm.expired,vm.stopping,vm.ended" {
		t.Fatalf("trail: %s", got)
	}
	var ttl string
	field(t, evs[2], "ttl", &ttl)
	var by struct{ Via string }
	field(t, evs[3], "by", &by)
	if ttl != "2s" || by.Via != "ttl" || evs[2].Name != "ttl-spin" || evs[2].Labels["team"] != "ci" {
		t.Errorf("vm.expired ttl=%q name %q labels %v; vm.stopping via %q", ttl, evs[2].Name, evs[2].Labels, by.Via)
	}
	// The guest ran at least its TTL, by the boot-time clock.
	if ran := time.Duration(evs[2].Boottime) - time.Duration(ended[0].Record.Started); ran < 2*time.Second {
		t.Errorf("expired %v after start, before the 2s TTL", ran)
	}
}

// TestStopIgnoredAndKill: `corral stop NAME --timeout 1s` of a guest that
// ignores the request stops it hard after the timeout; `corral kill` stops
// another at once. Each trail holds created, started, stopping (who asked,
// how), ended in that order.
func TestStopIgnoredAndKill(t *testing.T) {
	testenv.MustHaveKVM(t)
	_, trail := fakeInventory(t)
	spin := guests.BuildT(t, "spin")
	a := startRun(t, "--kernel", spin, "--memory", "64M", "--name", "stopme")
	b := startRun(t, "--kernel", spin, "--memory", "64M", "--name", "killme")
	va, vb := waitListed(t, "stopme", a), waitListed(t, "killme", b)

	// ps --json --metrics: the real VMM's counters, from its control socket.
	withMetrics := psJSON(t, "--metrics", "--filter", "name=stopme")
	if len(withMetrics) != 1 || withMetrics[0].MetricsError != "" {
		t.Fatalf("ps --json --metrics: %+v", withMetrics)
	}
	var exits float64
	for _, m := range withMetrics[0].Metrics {
		if m.Name == "corral_vcpu_exits_total" {
			for _, s := range m.Samples {
				exits += s.Value
			}
		}
	}
	if exits == 0 {
		t.Errorf("ps --json --metrics: no vCPU exits counted for a guest that printed a line: %+v", withMetrics[0].Metrics)
	}

	start := time.Now()
	code, out, stderr := runCLI(t, "stop", "stopme", "--timeout", "1s")
	took := time.Since(start)
	if code != exitOK || !strings.Contains(out, va.ID+" (stopme): stopped hard, stopped (the guest did not power off within 1s of the request") {
		t.Errorf("corral stop: %d %q %q", code, out, stderr)
	}
	if took < time.Second {
		t.Errorf("corral stop returned after %v, before the 1s timeout", took)
	}
	if st := a.wait(t, 30*time.Second); st != exitOK {
		t.Errorf("stopme's corral run: status %d: %s", st, a.errs.String())
	}
	code, out, stderr = runCLI(t, "kill", vb.ID[:8])
	if code != exitOK || !strings.Contains(out, vb.ID+" (killme): stopped hard, stopped (killed (uid ") {
		t.Errorf("corral kill: %d %q %q", code, out, stderr)
	}
	if st := b.wait(t, 30*time.Second); st != exitOK {
		t.Errorf("killme's corral run: status %d: %s", st, b.errs.String())
	}
	for _, c := range []struct {
		v   vmJSON
		how string
	}{{va, "power-off request"}, {vb, "kill"}} {
		evs := vmEvents(t, trail, c.v.ID)
		if got := eventNames(evs); got != "vm.created,vm.started,vm.stopping,vm.ended" {
			t.Errorf("%s's trail: %s", c.v.Name, got)
			continue
		}
		var how string
		var by struct {
			UID, PID int
			Via      string
		}
		field(t, evs[2], "how", &how)
		field(t, evs[2], "by", &by)
		if how != c.how || by.Via != "control socket" || by.UID != os.Geteuid() || by.PID != os.Getpid() {
			t.Errorf("%s's vm.stopping: how %q by %+v", c.v.Name, how, by)
		}
		var exit struct{ Reason string }
		field(t, evs[3], "exit", &exit)
		if exit.Reason != "stopped" {
			t.Errorf("%s's vm.ended: exit %+v", c.v.Name, exit)
		}
	}
	if vms := psJSON(t, "-a"); len(vms) != 2 || vms[0].State != inventory.Ended || vms[1].State != inventory.Ended {
		t.Errorf("ps -a after stop and kill: %+v", vms)
	}
	if code, _, stderr := runCLI(t, "stop", "stopme"); code != exitNotStopped || !strings.Contains(stderr, "is ended, not running") {
		t.Errorf("second stop: %d %q", code, stderr)
	}
}

// childEnvArgs makes this test binary, started by cliCommand, run the
// corral command in it as a separate process (arguments separated by
// \x1f: an environment variable cannot hold NUL).
const childEnvArgs = "CORRAL_CLI_TEST_ARGS"

// childEnvROMount has the child mount a read-only tmpfs on that directory
// first (it is started in its own mount namespace).
const childEnvROMount = "CORRAL_CLI_TEST_RO_MOUNT"

// asCLIChild runs the corral command of a child started by cliCommand and
// exits; in the test process it does nothing. Call it first in the test.
func asCLIChild() {
	a := os.Getenv(childEnvArgs)
	if a == "" {
		return
	}
	if d := os.Getenv(childEnvROMount); d != "" {
		if err := unix.Mount("corral-ro", d, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			os.Stderr.WriteString("child: mount: " + err.Error() + "\n")
			os.Exit(99)
		}
	}
	args := strings.Split(a, "\x1f")
	if args[0] == "dial" { // not a corral command: the control socket, directly
		_, err := control.NewClient(args[1]).Kill(context.Background())
		os.Stdout.WriteString("dial: " + errString(err) + "\n")
		os.Exit(0)
	}
	os.Exit(run(context.Background(), args, strings.NewReader(""), os.Stdout, os.Stderr))
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// cliCommand is this test binary as a child that runs `corral ARGS` (see
// asCLIChild) in test, with env added.
func cliCommand(bin, test string, env []string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), env...), childEnvArgs+"="+strings.Join(args, "\x1f"))
	return cmd
}

// TestSIGKILLedVMMIsCrashed: a corral run with a disk and a TAP, SIGKILLed,
// shows as crashed in ps -a, gets one vm.crashed (from ps) and a
// vm.collected (from gc); its TAP and its image lock are gone with it.
func TestSIGKILLedVMMIsCrashed(t *testing.T) {
	asCLIChild()
	testenv.MustHaveKVM(t)
	_, trail := fakeInventory(t)
	spin := guests.BuildT(t, "spin")
	img := sparseFile(t, 1<<20)
	netnstest.Run(t, func() {
		// Started from this thread, so the child's TAP is in this namespace.
		cmd := cliCommand(os.Args[0], "TestSIGKILLedVMMIsCrashed", nil,
			"run", "--kernel", spin, "--memory", "64M", "--name", "doomed", "--disk", img, "--net", "auto")
		r := &runningVM{done: make(chan int, 1)}
		cmd.Stderr = &r.errs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			cmd.Wait()
			r.done <- cmd.ProcessState.ExitCode()
		}()
		defer func() {
			cmd.Process.Kill()
			r.wait(t, 30*time.Second)
		}()
		v := waitListed(t, "doomed", r)
		if v.Record == nil || v.Record.PID != cmd.Process.Pid || len(v.Record.NICs) != 1 || len(v.Record.Disks) != 1 {
			t.Fatalf("ps --json: %+v", v.Record)
		}
		tap := v.Record.NICs[0].Tap
		if _, err := netlink.LinkByName(tap); err != nil {
			t.Fatalf("the VM's TAP %s: %v", tap, err)
		}
		if lockFree(t, img) {
			t.Fatal("the image is not locked while the VM runs")
		}
		cmd.Process.Signal(syscall.SIGKILL)
		if st := r.wait(t, 30*time.Second); st != -1 || !strings.Contains(cmd.ProcessState.String(), "killed") {
			t.Fatalf("the VMM ended with %v, not by SIGKILL", cmd.ProcessState)
		}

		all := psJSON(t, "-a")
		if len(all) != 1 || all[0].ID != v.ID || all[0].State != inventory.Crashed {
			t.Fatalf("ps -a after SIGKILL: %+v", all)
		}
		code, out, _ := runCLI(t, "ps", "-a")
		if code != exitOK || !strings.Contains(out, v.ID[:12]+"  doomed  crashed") {
			t.Errorf("ps -a table:\n%s", out)
		}
		if _, err := netlink.LinkByName(tap); !errors.As(err, new(netlink.LinkNotFoundError)) {
			t.Errorf("TAP %s after the VMM was killed: %v, want it gone", tap, err)
		}
		if !lockFree(t, img) {
			t.Error("the image is still locked after the VMM was killed")
		}
		if code, _, stderr := runCLI(t, "stop", "doomed"); code != exitNotStopped || !strings.Contains(stderr, "is crashed, not running") {
			t.Errorf("stop of a crashed VM: %d %q", code, stderr)
		}
		code, out, stderr := runCLI(t, "gc")
		if code != exitOK || !strings.Contains(out, "collected "+v.ID+" doomed (crashed)") {
			t.Errorf("gc: %d %q %q", code, out, stderr)
		}
		if got := eventNames(vmEvents(t, trail, v.ID)); got != "vm.created,vm.started,vm.crashed,vm.collected" {
			t.Errorf("trail: %s (the VMM's stderr: %s)", got, r.errs.String())
		}
		if all := psJSON(t, "-a"); len(all) != 0 {
			t.Errorf("ps -a after gc: %+v", all)
		}
	})
}

// lockFree reports whether an exclusive flock on path can be taken now.
func lockFree(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil
}

// openDirs makes d and its parents up to the temporary directory
// traversable by every user.
func openDirs(t *testing.T, d string) {
	t.Helper()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOtherUserCannotSeeOrStop: in a state directory shared by users,
// another uid lists none of root's VMs, and stop, kill and a direct
// request on the control socket all fail while the VM runs on.
func TestOtherUserCannotSeeOrStop(t *testing.T) {
	asCLIChild()
	testenv.MustHaveKVM(t)
	if os.Geteuid() != 0 {
		testenv.Missing(t, testenv.Root, "needs root to run a child as another uid")
	}
	sd, _ := fakeInventory(t)
	openDirs(t, sd)
	if err := os.Mkdir(inventory.VMsDir(sd), 0o1777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(inventory.VMsDir(sd), 0o1777)
	// A copy of this binary that nobody can run (go test's is private).
	bindir := t.TempDir()
	openDirs(t, bindir)
	bin := filepath.Join(bindir, "corral.test")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	r := startRun(t, "--kernel", guests.BuildT(t, "spin"), "--memory", "64M", "--name", "roots")
	v := waitListed(t, "roots", r)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	as := func(args ...string) (int, string, string) {
		cmd := cliCommand(bin, "TestOtherUserCannotSeeOrStop", nil, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		var out, errs bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errs
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("child as nobody: %v", err)
		}
		return code, out.String(), errs.String()
	}
	if code, out, errs := as("ps", "-a", "--json"); code != exitOK || strings.TrimSpace(out) != "[]" {
		t.Errorf("nobody's ps -a --json: %d %q %q, want []", code, out, errs)
	}
	for _, args := range [][]string{{"stop", "roots"}, {"kill", v.ID}, {"inspect", v.ID[:6]}, {"logs", "roots"}} {
		if code, _, errs := as(args...); code != exitNotStopped || !strings.Contains(errs, "nothing has the ID or name") {
			t.Errorf("nobody's corral %s: %d %q", strings.Join(args, " "), code, errs)
		}
	}
	sock := filepath.Join(v.Dir, control.SocketName)
	if _, out, _ := as("dial", sock); !strings.Contains(out, "permission denied") {
		t.Errorf("nobody's request on %s: %q, want permission denied", sock, out)
	}
	if vms := psJSON(t, "--filter", "name=roots"); len(vms) != 1 || vms[0].State != inventory.Running {
		t.Errorf("root's VM after nobody's attempts: %+v", vms)
	}
}

// TestStateDirNotWritableCLI: corral run in a state directory on a
// read-only file system fails at once with a message that names the
// directory and the way out, as it does when the audit trail is there.
func TestStateDirNotWritableCLI(t *testing.T) {
	asCLIChild()
	testenv.MustHaveKVM(t)
	if os.Geteuid() != 0 {
		testenv.Missing(t, testenv.Root, "needs root for a read-only mount in a mount namespace")
	}
	hello := guests.BuildT(t, "hello")
	ro := t.TempDir()
	trailDir := t.TempDir()
	for _, c := range []struct {
		trail, want string
	}{
		{filepath.Join(trailDir, "audit.jsonl"), "state directory " + ro + " is not writable by uid 0 (set $CORRAL_STATE_DIR to a directory you can write)"},
		{filepath.Join(ro, "audit.jsonl"), "trail " + filepath.Join(ro, "audit.jsonl") + " is not writable by uid 0 (set $CORRAL_AUDIT_LOG)"},
	} {
		cmd := cliCommand(os.Args[0], "TestStateDirNotWritableCLI",
			[]string{inventory.StateDirEnv + "=" + ro, audit.Env + "=" + c.trail, childEnvROMount + "=" + ro},
			"run", "--kernel", hello, "--memory", "64M")
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		var errs bytes.Buffer
		cmd.Stderr = &errs
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != exitVMMFailure || !strings.Contains(errs.String(), c.want) {
			t.Errorf("trail %s: %v, stderr %q; want status %d with %q", c.trail, err, errs.String(), exitVMMFailure, c.want)
		}
	}
}

// TestLinuxPowersOffOnStop: `corral stop` of a Linux guest ends it
// gracefully: the Ctrl-Alt-Del it is sent makes the kernel restart (a
// Corral machine ends on reset) long before the timeout. It needs a kernel
// with CONFIG_VT and CONFIG_KEYBOARD_ATKBD (the test kernel has them since
// tests/linux/kernel.config says so) in $CORRAL_KERNEL, and busybox for
// the initramfs.
func TestLinuxPowersOffOnStop(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := os.Getenv("CORRAL_KERNEL")
	if k == "" {
		t.Skip("skipping: needs a Linux kernel that boots here in $CORRAL_KERNEL (with CONFIG_VT and CONFIG_KEYBOARD_ATKBD, so Ctrl-Alt-Del reaches it)")
	}
	if _, err := os.Stat(rootfs.DefaultBusybox); err != nil {
		t.Skipf("skipping: %v", rootfs.ErrBusyboxMissing)
	}
	_, trail := fakeInventory(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{NoDHCP: true,
		Script: "echo corral-test: waiting\nsleep 3600\n"})
	// The host's test-kernel command line; inside tests/tcgkvm,
	// CORRAL_TCGKVM_CMDLINE adds what that emulator needs.
	cmdline, err := kernel.HostCmdline()
	if err != nil {
		t.Fatal(err)
	}
	r := startRun(t, "--kernel", k, "--initrd", initrd, "--cmdline", cmdline, "--memory", "256M", "--name", "linux")
	deadline := time.Now().Add(5 * time.Minute)
	var v vmJSON
	for {
		if vms := psJSON(t, "--filter", "name=linux"); len(vms) == 1 {
			v = vms[0]
			if _, logs, _ := runCLI(t, "logs", "linux"); strings.Contains(logs, "corral-test: waiting") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the Linux guest did not reach its script within 5 minutes")
		}
		time.Sleep(200 * time.Millisecond)
	}
	code, out, stderr := runCLI(t, "stop", "linux", "--timeout", "60s")
	if code != exitOK || !strings.Contains(out, "ended by the guest, reset") {
		t.Errorf("corral stop of Linux: %d %q %q", code, out, stderr)
	}
	if st := r.wait(t, time.Minute); st != exitOK {
		t.Errorf("corral run: status %d", st)
	}
	_, logs, _ := runCLI(t, "logs", "linux")
	if strings.Contains(logs, "Kernel panic") || strings.Contains(logs, "corral-init: exit status") {
		t.Errorf("the guest did not end on the request; console:\n%s", logs)
	}
	if got := eventNames(vmEvents(t, trail, v.ID)); got != "vm.created,vm.started,vm.stopping,vm.ended" {
		t.Errorf("trail: %s", got)
	}
}
