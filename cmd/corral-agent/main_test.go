package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/initrd"
)

// TestOrdinaryService runs the built agent as a service on a unix socket
// (not PID 1) and runs a command through it.
func TestOrdinaryService(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := initrd.BuildAgent(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.CommandContext(ctx, bin, "-listen", "unix:"+sock)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	dial := func() net.Conn {
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			c, err := net.Dial("unix", sock)
			if err == nil {
				return c
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("agent does not listen: %v", err)
			}
		}
	}
	out, err := client.Command(dial(), "sh", "-c", "echo $$ hello").Output()
	if err != nil || len(out) < 7 || string(out[len(out)-6:]) != "hello\n" {
		t.Fatalf("Output: %q, %v", out, err)
	}
	if err := client.PowerOff(ctx, dial()); !errors.Is(err, client.ErrRefused) {
		t.Errorf("PowerOff of a non-PID-1 agent: %v, want ErrRefused", err)
	}
	// main is agentcmd.Main: its exit status and console line.
	out, err = exec.CommandContext(ctx, bin, "-listen", "carrier-pigeon:1").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.HasPrefix(string(out), "corral-agent: error: agent: listen address") {
		t.Errorf("bad -listen: %v, output %q; want exit 1 and a corral-agent: error: line", err, out)
	}
}
