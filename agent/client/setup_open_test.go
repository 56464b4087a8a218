package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// TestSetupOpenThenCommand: SetupOpen at ExecAfterSetupVersion leaves the
// connection open after the Ack, and a CommandAfterHello on it sends its
// Exec straight away, with no second Hello.
func TestSetupOpenThenCommand(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	got := make(chan []proto.Type, 1)
	go func() {
		r, w := proto.NewReader(guest, proto.FromHost), proto.NewWriter(guest)
		var types []proto.Type
		defer func() { got <- types }()
		for {
			f, err := r.Next()
			if err != nil {
				return
			}
			types = append(types, f.Type)
			switch f.Type {
			case proto.TypeSetup:
				w.Send(proto.TypeAck, 0, nil)
			case proto.TypeExec:
				// A net.Pipe does not buffer: answer while the client
				// still sends its credit.
				go func() {
					w.Send(proto.TypeStarted, 0, proto.AppendU32(nil, 7))
					w.Send(proto.TypeClose, proto.StreamStdout, nil)
					w.Send(proto.TypeClose, proto.StreamStderr, nil)
					w.Send(proto.TypeExit, 0, proto.Exit{Value: 4}.Append(nil))
				}()
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open, err := SetupOpen(ctx, host, proto.ExecAfterSetupVersion, &proto.Setup{Root: "9p:corral-root"})
	if err != nil || !open {
		t.Fatalf("SetupOpen: open %v, %v", open, err)
	}
	err = CommandAfterHello(ctx, host, proto.ExecAfterSetupVersion, "true").Run()
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 4 {
		t.Fatalf("command: %v, want exit status 4", err)
	}
	types := <-got
	want := []proto.Type{proto.TypeSetup, proto.TypeExec, proto.TypeCredit, proto.TypeCredit}
	if len(types) < len(want) {
		t.Fatalf("the agent got %v, want %v first", types, want)
	}
	for i, ty := range want {
		if types[i] != ty {
			t.Fatalf("the agent got %v, want %v first", types, want)
		}
	}
}

// TestSetupOpenOldVersion: below ExecAfterSetupVersion the agent ends the
// session at the Ack, so SetupOpen closes the connection; without a
// version it refuses.
func TestSetupOpenOldVersion(t *testing.T) {
	for _, v := range []uint16{0, proto.ExecAfterSetupVersion - 1} {
		host, guest := net.Pipe()
		go func() {
			if f, err := proto.NewReader(guest, proto.FromHost).Next(); err == nil && f.Type == proto.TypeSetup {
				proto.NewWriter(guest).Send(proto.TypeAck, 0, nil)
			}
		}()
		open, err := SetupOpen(context.Background(), host, v, &proto.Setup{Root: "9p:corral-root"})
		if open || (v != 0) != (err == nil) {
			t.Errorf("version %d: open %v, %v", v, open, err)
		}
		if _, err := host.Write([]byte{0}); !errors.Is(err, net.ErrClosed) && !errors.Is(err, errClosedPipe()) {
			t.Errorf("version %d: the connection is still open (write: %v)", v, err)
		}
		guest.Close()
	}
}

// errClosedPipe is what a write on a net.Pipe end closed here returns.
func errClosedPipe() error {
	a, b := net.Pipe()
	b.Close()
	a.Close()
	_, err := a.Write([]byte{0})
	return err
}
