package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/inventory"
)

// stopTarget is a VM's side of the control socket for the CLI tests.
type stopTarget struct {
	mu      sync.Mutex
	timeout time.Duration
	killed  bool
}

func (s *stopTarget) Info() control.Info { return control.Info{ID: "x", State: "running"} }
func (s *stopTarget) Shutdown(_ context.Context, d time.Duration, _ control.Peer) (control.Ended, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.timeout = d
	return control.Ended{Exit: "stopped (the guest did not power off within 1s of the request)"}, nil
}
func (s *stopTarget) Kill(context.Context, control.Peer) (control.Ended, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killed = true
	return control.Ended{Exit: "stopped (killed)"}, nil
}
func (s *stopTarget) Metrics() []control.Metric { return nil }

// registerFake registers a running VM named name in a fresh state
// directory ($CORRAL_STATE_DIR) with a control socket served by tgt (nil:
// none: its lock is held but nothing answers, as for a VMM that hangs).
func registerFake(t *testing.T, name string, tgt control.Target) *inventory.Entry {
	t.Helper()
	sd := t.TempDir()
	t.Setenv(inventory.StateDirEnv, sd)
	id, err := inventory.NewID()
	if err != nil {
		t.Fatal(err)
	}
	start, err := inventory.ProcStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := inventory.BootID()
	e, err := inventory.Register(sd, inventory.Record{ID: id, Name: name, PID: os.Getpid(), PIDStart: start, BootID: boot,
		UID: os.Geteuid(), Kernel: "/k", CPUs: 1, Memory: 1 << 28, Created: time.Now(),
		Started: inventory.Duration(inventory.SystemClock{}.Boottime())})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if tgt != nil {
		s, err := control.Listen(filepath.Join(e.Dir(), control.SocketName), control.Config{Target: tgt, Owner: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close(time.Second) })
	}
	return e
}

func stopCLI(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	st := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return st, out.String(), errb.String()
}

func TestStopAndKillThroughTheControlSocket(t *testing.T) {
	tgt := &stopTarget{}
	registerFake(t, "web", tgt)
	st, out, errs := stopCLI("stop", "web", "--timeout", "1s")
	if st != exitOK || !strings.Contains(out, "(web): stopped hard, stopped (the guest did not power off") {
		t.Fatalf("corral stop web --timeout 1s: %d %q %q", st, out, errs)
	}
	tgt.mu.Lock()
	if tgt.timeout != time.Second {
		t.Errorf("the VM got timeout %v, want 1s", tgt.timeout)
	}
	tgt.mu.Unlock()
	if st, out, errs := stopCLI("kill", "web"); st != exitOK || !strings.Contains(out, "stopped (killed)") {
		t.Fatalf("corral kill web: %d %q %q", st, out, errs)
	}
	tgt.mu.Lock()
	defer tgt.mu.Unlock()
	if !tgt.killed {
		t.Error("kill did not reach the VM")
	}
}

func TestStopErrors(t *testing.T) {
	registerFake(t, "quiet", nil) // running (lock held) but no control socket
	for _, tc := range []struct {
		args []string
		st   int
		msg  string
	}{
		{[]string{"stop"}, exitUsage, "want one ID, ID prefix or name, got 0"},
		{[]string{"stop", "a", "b"}, exitUsage, "got 2 arguments"},
		{[]string{"kill"}, exitUsage, "got 0 arguments"},
		{[]string{"stop", "--timeout", "-1s", "quiet"}, exitUsage, "--timeout -1s: must be between 0 and 1h0m0s"},
		{[]string{"stop", "--timeout", "soon", "quiet"}, exitUsage, "invalid value"},
		{[]string{"stop", "nosuchvm"}, exitNotStopped, `nothing has the ID or name "nosuchvm"`},
		{[]string{"stop", "quiet"}, exitNotStopped, "does not answer on its control socket"},
		{[]string{"kill", "quiet"}, exitNotStopped, "does not answer on its control socket"},
	} {
		st, _, errs := stopCLI(tc.args...)
		if st != tc.st || !strings.Contains(errs, tc.msg) {
			t.Errorf("corral %s: %d %q, want %d with %q", strings.Join(tc.args, " "), st, errs, tc.st, tc.msg)
		}
	}
}

func TestStopEndedVM(t *testing.T) {
	e := registerFake(t, "gone", nil)
	e.Update(func(r *inventory.Record) { r.Ended = &inventory.End{Reason: "power-off", Time: time.Now()} })
	e.Close()
	st, _, errs := stopCLI("stop", "gone")
	if st != exitNotStopped || !strings.Contains(errs, "is ended, not running: nothing to stop") {
		t.Errorf("corral stop of an ended VM: %d %q", st, errs)
	}
}
