package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

// greetAt exchanges Hellos on conn, the host offering versions up to max,
// and returns the version the agent chose.
func greetAt(t *testing.T, conn net.Conn, max uint16) uint16 {
	t.Helper()
	if err := proto.NewWriter(conn).Send(proto.TypeHello, 0, proto.Hello{Min: proto.MinVersion, Max: max}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	f, err := proto.NewReader(conn, proto.FromAgent).Next()
	if err != nil || f.Type != proto.TypeHello {
		t.Fatalf("agent's Hello: %v %v", f.Type, err)
	}
	h, err := proto.ParseHello(f.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return h.Max
}

// TestExecAfterSetup: from ExecAfterSetupVersion the host runs its first
// command on the Setup's connection: one connection and one agent session
// for Hello, Setup and the command, whose output and status arrive as on
// a connection of its own.
func TestExecAfterSetup(t *testing.T) {
	srv, r := deferredServer(t, nil)
	conn := pipeDial(t, srv)
	v := greetAt(t, conn, proto.Version)
	if v != proto.Version || v < proto.ExecAfterSetupVersion {
		t.Fatalf("negotiated version %d, want %d (at least %d)", v, proto.Version, proto.ExecAfterSetupVersion)
	}
	ctx := context.Background()
	open, err := client.SetupOpen(ctx, conn, v, &proto.Setup{Root: "9p:root", Shares: []string{"a:/mnt/a"}})
	if err != nil || !open {
		t.Fatalf("SetupOpen: open %v, %v; want the session left open", open, err)
	}
	if len(r.mounts()) == 0 {
		t.Fatal("Setup mounted nothing")
	}
	var out bytes.Buffer
	cmd := client.CommandAfterHello(ctx, conn, v, "sh", "-c", "echo on the setup session; exit 3")
	cmd.Stdout = &out
	err = cmd.Run()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || out.String() != "on the setup session\n" {
		t.Fatalf("command after Setup: %v, output %q; want exit status 3 and its line", err, out.String())
	}
	if st := srv.Stats(); st.Sessions != 1 || st.Started != 1 || st.ProtocolErrors != 0 {
		t.Errorf("stats %+v, want one session that started one command", st)
	}
}

// TestPowerOffAfterSetup: the request after Setup's Ack may be a
// power-off too.
func TestPowerOffAfterSetup(t *testing.T) {
	srv, _ := deferredServer(t, nil)
	off := make(chan struct{}, 1)
	srv.cfg.PowerOff = func() error { off <- struct{}{}; return nil }
	srv.cfg.Sync = func() {}
	conn := pipeDial(t, srv)
	v := greetAt(t, conn, proto.Version)
	if open, err := client.SetupOpen(context.Background(), conn, v, &proto.Setup{Root: "9p:root"}); err != nil || !open {
		t.Fatalf("SetupOpen: open %v, %v", open, err)
	}
	if err := proto.NewWriter(conn).Send(proto.TypePowerOff, 0, nil); err != nil {
		t.Fatal(err)
	}
	if f, err := proto.NewReader(conn, proto.FromAgent).Next(); err != nil || f.Type != proto.TypeAck {
		t.Fatalf("after PowerOff: %v %v, want Ack", f.Type, err)
	}
	conn.Close()
	select {
	case <-off:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not power off")
	}
}

// TestExecAfterSetupOldSession: in a session of a version before
// ExecAfterSetupVersion the agent ends the session at Setup's Ack, as
// older agents do (a command sent after it is not run), and SetupOpen
// closes the connection rather than leave it for a command.
func TestExecAfterSetupOldSession(t *testing.T) {
	srv, _ := deferredServer(t, nil)
	host, w, r, done := rawSession(t, srv)
	old := uint16(proto.ExecAfterSetupVersion - 1)
	go w.Send(proto.TypeHello, 0, proto.Hello{Min: old, Max: old}.Append(nil))
	next(t, r, proto.TypeHello)
	p, _ := (&proto.Setup{Root: "9p:root"}).Append(nil)
	go w.Send(proto.TypeSetup, 0, p)
	next(t, r, proto.TypeAck)
	// The agent ends the session by itself: the host has not closed.
	if err := result(t, done); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	e, _ := (&proto.Exec{Path: "true", Args: []string{"true"}}).Append(nil)
	go w.Send(proto.TypeExec, 0, e)
	if f, err := r.Next(); err != io.EOF {
		t.Fatalf("after an Exec behind a version %d Setup: %s %v, want the connection closed", old, f.Type, err)
	}
	host.Close()
	if st := srv.Stats(); st.Started != 0 {
		t.Errorf("%d commands started", st.Started)
	}

	srv, _ = deferredServer(t, nil)
	conn := pipeDial(t, srv)
	v := greetAt(t, conn, old)
	open, err := client.SetupOpen(context.Background(), conn, v, &proto.Setup{Root: "9p:root"})
	if err != nil || open {
		t.Fatalf("SetupOpen at version %d: open %v, %v; want done and closed", v, open, err)
	}
	if _, err := conn.Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("SetupOpen left the version %d connection open: write %v", v, err)
	}
}

// TestAfterSetupRefused: after Setup's Ack only Exec or PowerOff may
// come; a second Setup or anything else is a protocol error and runs
// nothing.
func TestAfterSetupRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		typ  proto.Type
		want string
	}{
		{"second Setup", proto.TypeSetup, "second Setup in one session"},
		{"Hello", proto.TypeHello, "host sent Hello after Setup's Ack, want Exec or PowerOff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, r := deferredServer(t, nil)
			_, w, fr, done := rawSession(t, srv)
			hello(t, w, fr)
			p, _ := (&proto.Setup{Root: "9p:root"}).Append(nil)
			go w.Send(proto.TypeSetup, 0, p)
			next(t, fr, proto.TypeAck)
			n := len(r.calls)
			payload := p
			if tc.typ == proto.TypeHello {
				payload = proto.Hello{Min: proto.MinVersion, Max: proto.Version}.Append(nil)
			}
			go w.Send(tc.typ, 0, payload)
			wantError(t, fr, proto.CodeProtocol, tc.want)
			if err := result(t, done); !errors.Is(err, proto.ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ServeConn: %v, want a protocol error", err)
			}
			if len(r.calls) != n {
				t.Errorf("calls after the Ack: %q", r.calls[n:])
			}
		})
	}
}
