package agentvm

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

// rawAgent is an agent speaking protocol version v over socket pairs: it
// acks Setup (and, from proto.ExecAfterSetupVersion, reads on after it,
// as the real agent does) and answers every Exec with exit status 3.
type rawAgent struct {
	v      uint16
	dials  atomic.Int32
	execs  atomic.Int32
	hangUp chan struct{} // a session ended by the host's close
	wg     sync.WaitGroup

	mu       sync.Mutex
	resolved []string // each Exec's Resolved, in order
}

func (a *rawAgent) dial(ctx context.Context) (net.Conn, error) {
	a.dials.Add(1)
	host, guest, err := socketPair()
	if err != nil {
		return nil, err
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer guest.Close()
		r, w := proto.NewReader(guest, proto.FromHost), proto.NewWriter(guest)
		if f, err := r.Next(); err != nil || f.Type != proto.TypeHello {
			return
		}
		w.Send(proto.TypeHello, 0, proto.Hello{Min: a.v, Max: a.v}.Append(nil))
		for {
			f, err := r.Next()
			if err == io.EOF {
				a.hangUp <- struct{}{}
				return
			}
			if err != nil {
				return
			}
			switch f.Type {
			case proto.TypeSetup:
				w.Send(proto.TypeAck, 0, nil)
				if a.v < proto.ExecAfterSetupVersion {
					return
				}
			case proto.TypeExec:
				a.execs.Add(1)
				if e, err := proto.ParseExec(f.Payload); err == nil {
					a.mu.Lock()
					a.resolved = append(a.resolved, e.Resolved)
					a.mu.Unlock()
				}
				w.Send(proto.TypeStarted, 0, proto.AppendU32(nil, 9))
				w.Send(proto.TypeClose, proto.StreamStdout, nil)
				w.Send(proto.TypeClose, proto.StreamStderr, nil)
				w.Send(proto.TypeExit, 0, proto.Exit{Value: 3}.Append(nil))
				return
			}
		}
	}()
	return host, nil
}

// TestCommandOnSetupSession: a warm machine's first command goes on the
// Setup's connection when the agent speaks proto.ExecAfterSetupVersion
// (one dial for the readiness probe, the Setup and the command); an older
// agent ends that session at the Ack, and the command dials its own. A
// second command always dials.
func TestCommandOnSetupSession(t *testing.T) {
	for _, tc := range []struct {
		v     uint16
		dials int32
	}{
		{proto.ExecAfterSetupVersion, 1},
		{proto.ExecAfterSetupVersion - 1, 2},
	} {
		a := &rawAgent{v: tc.v, hangUp: make(chan struct{}, 8)}
		done := make(chan struct{})
		vm := newAgentVM(a.dial, done, func() error { close(done); return nil }, newConsoleRing(nil, ConsoleLines), slog.New(slog.DiscardHandler))
		vm.keepProbe = true
		ctx := context.Background()
		if err := vm.waitAgent(ctx, 10*time.Second, exitPowerOff); err != nil {
			t.Fatal(err)
		}
		if err := vm.setup(ctx, &proto.Setup{Root: "9p:corral-root"}); err != nil {
			t.Fatalf("version %d: setup: %v", tc.v, err)
		}
		var ee *client.ExitError
		if err := vm.CommandContext(ctx, "true").Run(); !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("version %d: command: %v, want exit status 3", tc.v, err)
		}
		if n := a.dials.Load(); n != tc.dials {
			t.Errorf("version %d: %d dials for probe, Setup and command, want %d", tc.v, n, tc.dials)
		}
		if err := vm.Command("true").Run(); !errors.As(err, &ee) {
			t.Fatalf("version %d: second command: %v", tc.v, err)
		}
		if n := a.dials.Load(); n != tc.dials+1 {
			t.Errorf("version %d: the second command made %d dials, want 1", tc.v, n-tc.dials)
		}
		vm.Kill()
		a.wg.Wait()
		if n := a.execs.Load(); n != 2 {
			t.Errorf("version %d: the agent ran %d commands, want 2", tc.v, n)
		}
	}
}

// TestKillClosesSetupSession: a Setup session kept for a command that
// never came is closed with the machine (the agent's session ends).
func TestKillClosesSetupSession(t *testing.T) {
	a := &rawAgent{v: proto.ExecAfterSetupVersion, hangUp: make(chan struct{}, 8)}
	done := make(chan struct{})
	vm := newAgentVM(a.dial, done, func() error { close(done); return nil }, newConsoleRing(nil, ConsoleLines), slog.New(slog.DiscardHandler))
	if err := vm.setup(context.Background(), &proto.Setup{Root: "9p:corral-root"}); err != nil {
		t.Fatal(err)
	}
	if a.dials.Load() != 1 {
		t.Fatalf("%d dials, want 1 (setup without a kept probe dials)", a.dials.Load())
	}
	vm.Kill()
	select {
	case <-a.hangUp:
	case <-time.After(10 * time.Second):
		t.Fatal("the kept Setup session is still open after Kill")
	}
	a.wg.Wait()
}

// TestFirstCommandGetsHostRoot: the command that takes a warm machine's
// Setup session, or a cold machine's first command (its agent set the
// root up at boot), looks its program up in the host's root and sends the
// answer (proto.ResolvedVersion); a later command, and any command to an
// older agent, sends none.
func TestFirstCommandGetsHostRoot(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "prog"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		v    uint16
		cold bool
		want []string
	}{
		{proto.ResolvedVersion, false, []string{"/bin/prog", ""}},
		{proto.ResolvedVersion - 1, false, []string{"", ""}},
		{proto.ResolvedVersion, true, []string{"/bin/prog", ""}},
	} {
		a := &rawAgent{v: tc.v, hangUp: make(chan struct{}, 8)}
		done := make(chan struct{})
		vm := newAgentVM(a.dial, done, func() error { close(done); return nil }, newConsoleRing(nil, ConsoleLines), slog.New(slog.DiscardHandler))
		ctx := context.Background()
		if !tc.cold {
			if err := vm.setup(ctx, &proto.Setup{Root: "9p:corral-root"}); err != nil {
				t.Fatal(err)
			}
		}
		vm.withHostRoot(Config{Root: RootDir(root)}) // as Start and StartWarm do
		for range 2 {
			cmd := vm.Command("prog")
			cmd.Env = []string{"PATH=/usr/bin:/bin"}
			var ee *client.ExitError
			if err := cmd.Run(); !errors.As(err, &ee) {
				t.Fatalf("version %d, cold %v: %v", tc.v, tc.cold, err)
			}
		}
		vm.Kill()
		a.wg.Wait()
		if !slices.Equal(a.resolved, tc.want) {
			t.Errorf("version %d, cold %v: the agent got resolved paths %q, want %q", tc.v, tc.cold, a.resolved, tc.want)
		}
	}
}
