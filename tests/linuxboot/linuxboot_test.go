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
	"os"
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
	_, vmlinux, err := kernel.Find(false)
	if err != nil {
		testenv.Missing(t, testenv.Kernel, "needs the test kernel ($CORRAL_KERNEL or tests/linux/build-kernel.sh --no-patches): %v", err)
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

	// Inside tests/tcgkvm, CORRAL_TCGKVM_CMDLINE holds any kernel
	// parameters that emulator needs (none by default; README there).
	cmdline := strings.TrimSpace(kernel.CmdlinePlain + " " + os.Getenv("CORRAL_TCGKVM_CMDLINE"))
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
