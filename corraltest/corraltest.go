package corraltest

import (
	"context"
	"net"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agentvm"
)

// Config describes a machine to run the agent in (see agentvm.Config).
// StartT fills in what is empty: the kernel ($CORRAL_KERNEL), the agent
// ($CORRAL_AGENT, else a build of it), the console and the logger.
type Config = agentvm.Config

// ExitError is the error of a command that ran and ended unsuccessfully;
// its ExitCode is the exit status, or -1 when a signal ended it.
type ExitError = client.ExitError

// Cmd is a command to run in the guest, shaped like os/exec.Cmd.
type Cmd = client.Cmd

// VM is a machine started by StartT or StartMachineT for one test. Its
// methods are safe for concurrent use.
type VM struct {
	tb      testing.TB
	m       *corral.Machine
	agent   *agentvm.VM // nil for StartMachineT
	console *console
	check   *leakCheck
}

// StartT boots the machine cfg describes with Corral's agent as its init
// and returns once the agent answers. The guest's console goes to t.Log,
// line by line. When the test ends the machine is powered off and
// released, and the descriptors its creation opened are checked to be
// closed (see the package documentation). Where KVM is missing the test
// skips, or fails when $CORRAL_REQUIRE names kvm; without a kernel
// (Config.Machine.Kernel, $CORRAL_KERNEL) it skips, or fails when
// $CORRAL_REQUIRE names kernel. A machine or agent that
// does not come up fails the test with the reason and the console's last
// lines. StartT must be called from the test's goroutine.
func StartT(t testing.TB, cfg Config) *VM {
	t.Helper()
	mustHaveKVM(t, cfg.Machine.KVMDevice)
	cfg.Machine.Kernel = kernelPath(t, cfg.Machine.Kernel)
	cfg.Agent = agentPath(t, cfg.Agent)
	vm := &VM{tb: t, console: newConsole(t, cfg.Machine.Console)}
	cfg.Machine.Console = vm.console
	check := vm.watch(&cfg.Machine)
	vm.check = check
	var avm *agentvm.VM
	t.Cleanup(func() { vm.cleanup(check, func() error { return avm.Close() }, avm != nil) })
	avm, err := agentvm.Start(t.Context(), cfg)
	check.abort()
	if err != nil {
		t.Fatalf("corraltest: %v", err)
	}
	vm.agent, vm.m = avm, avm.Machine()
	return vm
}

// StartMachineT is StartT for a guest without the agent (a freestanding
// test kernel, say): it creates and starts the machine cfg describes as
// is, with the same console logging, skipping and leak check. Command does
// not work on it; Expect and DialVsock do.
func StartMachineT(t testing.TB, cfg corral.Config) *VM {
	t.Helper()
	mustHaveKVM(t, cfg.KVMDevice)
	cfg.Kernel = kernelPath(t, cfg.Kernel)
	vm := &VM{tb: t, console: newConsole(t, cfg.Console)}
	cfg.Console = vm.console
	check := vm.watch(&cfg)
	vm.check = check
	m, err := corral.New(cfg)
	check.abort()
	if err != nil {
		t.Cleanup(func() { vm.cleanup(check, nil, false) })
		t.Fatalf("corraltest: %v", err)
	}
	vm.m = m
	t.Cleanup(func() { vm.cleanup(check, m.Close, true) })
	if err := m.Start(t.Context()); err != nil {
		t.Fatalf("corraltest: %v", err)
	}
	return vm
}

// watch sets up the leak check of the machine mc describes: its logger
// tells the check when corral.New begins and ends creating the machine.
func (vm *VM) watch(mc *corral.Config) *leakCheck {
	// Disk images are opened by New alone. Shared directories are left
	// out: running machines open descriptors on them at any time, so one
	// found in the creation window need not be this machine's.
	var paths []string
	for _, d := range mc.Disks {
		paths = append(paths, d.Path)
	}
	var abs []string
	for _, p := range paths {
		// Descriptor targets are absolute, symbolic links resolved.
		if r, err := filepath.EvalSymlinks(p); err == nil {
			if r, err = filepath.Abs(r); err == nil {
				abs = append(abs, r)
			}
		}
	}
	check := newLeakCheck(procOS{}, abs)
	mc.Logger = newWatchLogger(mc.Logger, check, vm.console)
	return check
}

// cleanup stops the machine (with stop, when started), logs the rest of the
// console and fails the test on a leaked descriptor.
func (vm *VM) cleanup(check *leakCheck, stop func() error, started bool) {
	var taps []string
	if vm.m != nil {
		for _, n := range vm.m.Networks() {
			taps = append(taps, n.Tap)
		}
	}
	if started && stop != nil {
		if err := stop(); err != nil {
			vm.tb.Errorf("corraltest: closing the machine: %v", err)
		}
	}
	vm.console.close()
	leaks, note := check.finish(taps)
	if note != "" {
		vm.tb.Logf("corraltest: descriptor leak check skipped: %s", note)
	}
	for _, l := range leaks {
		vm.tb.Errorf("corraltest: %s, opened when the machine was created, is still open after it was closed", l)
	}
}

// Command returns a command that runs name with args in the guest, over its
// own connection to the agent. It fails the test on a machine started with
// StartMachineT (call it from the test's goroutine then).
func (vm *VM) Command(name string, args ...string) *Cmd {
	vm.tb.Helper()
	return vm.CommandContext(context.Background(), name, args...)
}

// CommandContext is Command with a context: when ctx ends before the
// command, the command and its process group are killed.
func (vm *VM) CommandContext(ctx context.Context, name string, args ...string) *Cmd {
	vm.tb.Helper()
	if vm.agent == nil {
		vm.tb.Fatalf("corraltest: Command(%q) on a machine without the agent (StartMachineT)", name)
	}
	return vm.agent.CommandContext(ctx, name, args...)
}

// Expect waits until the console output since the previous match (or the
// start) matches re, and returns the match followed by its submatches, as
// regexp.FindStringSubmatch. It looks at complete lines only (with their
// "\n"; a last line without one once the machine has ended), so "(.*)"
// never takes half a line; a match may span lines. It fails when ctx ends
// or the machine ends first, with an error quoting the console's last
// lines.
func (vm *VM) Expect(ctx context.Context, re *regexp.Regexp) ([]string, error) {
	return vm.console.expect(ctx, re, vm.m.Done())
}

// DialVsock connects to port on the guest (see corral.Machine.DialVsock).
func (vm *VM) DialVsock(ctx context.Context, port uint32) (net.Conn, error) {
	return vm.m.DialVsock(ctx, port)
}

// Machine returns the machine.
func (vm *VM) Machine() *corral.Machine { return vm.m }

// ConsoleTail returns the console's last n lines, oldest first.
func (vm *VM) ConsoleTail(n int) []string { return vm.console.lines(n) }
