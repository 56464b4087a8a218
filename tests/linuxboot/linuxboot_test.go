// Package linuxboot is a smoke test of the whole Linux guest path: Corral
// boots the test kernel with a busybox initramfs and the guest agent as
// PID 1, and a command runs in the guest over vsock. It runs on hosts with
// KVM and, through tests/tcgkvm, on hosts without (the kernel and agent
// come from $CORRAL_KERNEL and $CORRAL_AGENT there).
package linuxboot

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// agentWait bounds the wait for the agent: about 10 s under tests/tcgkvm,
// well under a second on hardware KVM.
const agentWait = 3 * time.Minute

// console keeps the guest's console for the failure message.
type console struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *console) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := strings.Split(strings.TrimRight(c.buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func testKernel(t *testing.T) string {
	if k := os.Getenv("CORRAL_KERNEL"); k != "" {
		return k
	}
	// Not built, or no source tree to look in (a test binary copied
	// elsewhere, as in tests/tcgkvm without a kernel shipped).
	vmlinux, c, err := kernel.FindHost()
	if err != nil {
		testenv.Missing(t, testenv.Kernel, "needs the test kernel ($CORRAL_KERNEL or %s): %v", c.BuildHint(), err)
	}
	return vmlinux
}

func agentBinary(t *testing.T) []byte {
	p := os.Getenv("CORRAL_AGENT")
	if p == "" {
		testenv.MustHaveCommand(t, "go", "golang-go")
		var err error
		if p, err = initrd.BuildAgent(context.Background(), t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgentCommand boots the test kernel with the agent as /init and runs
// a command through it: stdout, stderr and the exit status come back
// separately. It logs the time from Start to the agent's first answer and
// to the command's end.
func TestAgentCommand(t *testing.T) {
	testenv.MustHaveKVM(t)
	vmlinux := testKernel(t)
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	agentELF := agentBinary(t)

	var user bytes.Buffer
	if err := rootfs.BuildInitramfs(&user, rootfs.InitramfsOptions{NoDHCP: true}); err != nil {
		t.Fatal(err)
	}
	initramfs, err := os.CreateTemp(t.TempDir(), "initramfs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := initrd.Write(initramfs, &user, agentELF); err != nil {
		t.Fatal(err)
	}
	if err := initramfs.Close(); err != nil {
		t.Fatal(err)
	}

	// The host's test-kernel command line; inside tests/tcgkvm,
	// CORRAL_TCGKVM_CMDLINE adds any kernel parameters that emulator needs
	// (none by default; README there).
	cmdline, err := kernel.HostCmdline()
	if err != nil {
		t.Fatal(err)
	}
	var cons console
	m, err := corral.New(corral.Config{
		Kernel:  vmlinux,
		Initrd:  initramfs.Name(),
		Cmdline: cmdline,
		NoACPI:  true,
		Vsock:   &corral.Vsock{CID: 3},
		Console: &cons,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	start := time.Now()
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), agentWait)
	defer cancel()
	var c interface{ Close() error }
	for {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := m.DialVsock(dctx, agent.DefaultPort)
		dcancel()
		if err == nil {
			c = conn
			t.Logf("agent answered %.1f s after Start", time.Since(start).Seconds())
			cmd := client.CommandContext(ctx, conn, "/bin/sh", "-c", "echo out; echo err >&2; exit 3")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *client.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 || stdout.String() != "out\n" || stderr.String() != "err\n" {
				t.Errorf("sh -c 'echo out; echo err >&2; exit 3': %v, stdout %q, stderr %q; want exit status 3, \"out\\n\", \"err\\n\"",
					err, stdout.String(), stderr.String())
			}
			t.Logf("command finished %.1f s after Start", time.Since(start).Seconds())
			conn.Close()
			snapshotAndRestore(t, m, &cons)
			break
		}
		select {
		case <-m.Done():
			t.Fatalf("machine ended before the agent answered; console:\n%s", cons.tail(40))
		case <-ctx.Done():
			t.Fatalf("no agent after %v (%v); console:\n%s", agentWait, err, cons.tail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
	c.Close()
}

// dialAgent dials the agent until it answers.
func dialAgent(t *testing.T, ctx context.Context, m *corral.Machine, cons *console) net.Conn {
	t.Helper()
	for {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := m.DialVsock(dctx, agent.DefaultPort)
		dcancel()
		if err == nil {
			return conn
		}
		select {
		case <-m.Done():
			t.Fatalf("machine ended before the agent answered; console:\n%s", cons.tail(40))
		case <-ctx.Done():
			t.Fatalf("no agent after %v (%v); console:\n%s", agentWait, err, cons.tail(40))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// uptime runs cat /proc/uptime in the guest: CLOCK_BOOTTIME, which follows
// the kvmclock.
func uptime(t *testing.T, ctx context.Context, m *corral.Machine, cons *console) float64 {
	t.Helper()
	conn := dialAgent(t, ctx, m, cons)
	defer conn.Close()
	out, err := client.CommandContext(ctx, conn, "cat", "/proc/uptime").Output()
	if err != nil {
		t.Fatalf("cat /proc/uptime: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("cat /proc/uptime: %q", out)
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		t.Fatalf("cat /proc/uptime: %q: %v", out, err)
	}
	return v
}

// snapshotAndRestore is issue 13's Linux test, on the boot TestAgentCommand
// made: snapshot once the agent is up, restore after a pause, run a
// command in the restored guest (its vsock connections were reset: the
// agent is dialled afresh), and check that the guest's clock moved on by
// the time in between.
func snapshotAndRestore(t *testing.T, m *corral.Machine, cons *console) {
	ctx, cancel := context.WithTimeout(context.Background(), agentWait)
	defer cancel()
	h1, u1 := time.Now(), uptime(t, ctx, m, cons)
	if err := m.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "snap")
	if err := m.Snapshot(ctx, dir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	h2 := time.Now()
	m.Close()
	const gap = 8 * time.Second
	time.Sleep(gap)
	var rcons console
	r, err := corral.Restore(ctx, dir, corral.RestoreConfig{Console: &rcons, NoInventory: true})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	defer r.Close()
	h3 := time.Now()
	if err := r.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	conn := dialAgent(t, ctx, r, &rcons)
	out, err := client.CommandContext(ctx, conn, "/bin/sh", "-c", "echo restored; exit 4").Output()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 || string(out) != "restored\n" {
		t.Errorf("in the restored guest, sh -c 'echo restored; exit 4': %v, %q", err, out)
	}
	conn.Close()
	u2, h4 := uptime(t, ctx, r, &rcons), time.Now()
	guest, host, away := time.Duration((u2-u1)*float64(time.Second)), h4.Sub(h1), h3.Sub(h2)
	t.Logf("guest uptime moved %v while the host's moved %v, %v of it between snapshot and restore", guest, host, away)
	if guest < away || guest > host+3*time.Second {
		t.Errorf("the restored guest's clock moved %v; want at least the %v between snapshot and restore and at most the host's %v", guest, away, host)
	}
}
