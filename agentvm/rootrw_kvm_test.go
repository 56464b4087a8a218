package agentvm

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/internal/syncbuf"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// linuxGuest returns the test kernel, its command line and the agent for
// a Linux guest, or skips: $CORRAL_KERNEL and $CORRAL_AGENT (set in
// tests/tcgkvm), else the built test kernel and an agent built now.
func linuxGuest(t *testing.T) (vmlinux, cmdline, agentPath string) {
	testenv.MustHaveKVM(t)
	vmlinux = os.Getenv("CORRAL_KERNEL")
	if vmlinux == "" {
		vm, c, err := kernel.FindHost()
		if err != nil {
			testenv.Missing(t, testenv.Kernel, "needs the test kernel ($CORRAL_KERNEL or %s): %v", c.BuildHint(), err)
		}
		vmlinux = vm
	}
	agentPath = os.Getenv(AgentEnv)
	if agentPath == "" {
		testenv.MustHaveCommand(t, "go", "golang-go")
		var err error
		if agentPath, err = initrd.BuildAgent(context.Background(), t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	// The host's test-kernel command line (the nested KVM's needs more);
	// inside tests/tcgkvm, CORRAL_TCGKVM_CMDLINE adds what that emulator
	// needs (README there).
	cmdline, err := kernel.HostCmdline()
	if err != nil {
		t.Fatal(err)
	}
	return vmlinux, cmdline, agentPath
}

// busyboxRoot writes a root of Debian's static busybox and its applets'
// links into a new directory.
func busyboxRoot(t *testing.T) string {
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	bb, err := os.ReadFile(rootfs.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range rootfs.Applets() {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", a)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// TestAgentCommandRootDirRW boots a Linux guest whose root is a host
// directory, read-write (RootDirRW), with a host name and a tmpfs, as the
// containerd shim does: cold (set up at boot) and warm (set up by Setup
// after the snapshot, then restored once: restoredConsole). The command
// sees its host name and the tmpfs, and its write to / is in the host
// directory once the machine is closed.
func TestAgentCommandRootDirRW(t *testing.T) {
	vmlinux, cmdline, agentPath := linuxGuest(t)
	for _, warm := range []bool{false, true} {
		name := map[bool]string{false: "cold", true: "warm"}[warm]
		t.Run(name, func(t *testing.T) {
			root := busyboxRoot(t)
			var cons syncbuf.Buffer
			cfg := Config{
				Machine:  corral.Config{Kernel: vmlinux, Cmdline: cmdline, NoInventory: true, Console: &cons},
				Agent:    agentPath,
				Root:     RootDirRW(root),
				Hostname: "t1-" + name,
				Tmpfs:    []string{"/scratch"},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			w := Warm{Dir: t.TempDir(), Version: "test"}
			t0 := time.Now()
			var vm *VM
			var err error
			if warm {
				vm, err = StartWarm(ctx, cfg, w)
			} else {
				vm, err = Start(ctx, cfg)
			}
			if err != nil {
				t.Fatalf("start: %v; console:\n%s", err, cons.String())
			}
			defer vm.Kill()
			t.Logf("agent up %.1f s after start", time.Since(t0).Seconds())
			var stdout, stderr bytes.Buffer
			cmd := vm.CommandContext(ctx, "/bin/sh", "-c", "hostname; echo hi > /f; mount | grep scratch")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("command: %v, stdout %q, stderr %q; console:\n%s", err, stdout.String(), stderr.String(), cons.String())
			}
			lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
			if len(lines) != 2 || lines[0] != cfg.Hostname || !strings.HasPrefix(lines[1], "tmpfs on /scratch type tmpfs ") {
				t.Errorf("stdout %q, want the host name %q and a tmpfs on /scratch", stdout.String(), cfg.Hostname)
			}
			if err := vm.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "hi\n" {
				t.Errorf("the guest's /f on the host: %q, %v; want \"hi\\n\"", b, err)
			}
			if warm {
				restoredConsole(t, ctx, cfg, w)
			}
		})
	}
}

// restoredConsole starts cfg again from the snapshot the warm subtest
// built (a restore, not a boot) and runs a command: the restored guest's
// console must stay silent. Its clocksource watchdog saw the restore's
// clock gap and printed "clocksource: Long readout interval, skipping
// watchdog check" (or marked the TSC unstable) until warm machines got
// tsc=nowatchdog: ~130 emulated UART exits per warm exec under TCG.
func restoredConsole(t *testing.T, ctx context.Context, cfg Config, w Warm) {
	var cons syncbuf.Buffer
	cfg.Machine.Console = &cons
	cfg.Machine.Logger = slog.New(slog.NewTextHandler(&cons, nil))
	vm, err := StartWarm(ctx, cfg, w)
	if err != nil {
		t.Fatalf("restore: %v; console:\n%s", err, cons.String())
	}
	defer vm.Kill()
	if out, err := vm.CommandContext(ctx, "/bin/sh", "-c", "echo again").Output(); err != nil || string(out) != "again\n" {
		t.Errorf("restored: stdout %q, %v", out, err)
	}
	if err := vm.Close(); err != nil {
		t.Errorf("restored: Close: %v", err)
	}
	c := cons.String()
	if !strings.Contains(c, "warm: restored") {
		t.Fatalf("the second warm start did not restore:\n%s", c)
	}
	for _, l := range strings.Split(c, "\n") {
		if strings.Contains(l, "clocksource") {
			t.Errorf("restored guest's console: %q", l)
		}
	}
}
