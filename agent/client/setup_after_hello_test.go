package client

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// TestSetupAfterHelloClearsDeadline: the connection a readiness probe
// kept still carries its Hello's deadline, which has passed by the time
// the Setup goes (a warm machine's confinement took a while, or its
// clock jumped); ctx alone bounds the Setup.
func TestSetupAfterHelloClearsDeadline(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	got := make(chan proto.Frame, 1)
	go func() {
		f, err := proto.NewReader(guest, proto.FromHost).Next()
		if err != nil {
			close(got)
			return
		}
		got <- f
		proto.NewWriter(guest).Send(proto.TypeAck, 0, nil)
	}()
	host.SetDeadline(time.Now().Add(-time.Second)) // the Hello's, passed
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := SetupAfterHello(ctx, host, proto.Version, &proto.Setup{Root: "9p:corral-root"}); err != nil {
		t.Fatalf("SetupAfterHello on a connection with a passed deadline: %v", err)
	}
	if f, ok := <-got; !ok || f.Type != proto.TypeSetup {
		t.Errorf("the agent got %v (%v), want a Setup", f.Type, ok)
	}
}

// TestSetupAfterHelloBadRequest: a Setup that cannot be encoded fails
// before anything is sent, and the connection is closed.
func TestSetupAfterHelloBadRequest(t *testing.T) {
	host, guest := net.Pipe()
	defer guest.Close()
	err := SetupAfterHello(context.Background(), host, proto.Version, &proto.Setup{Root: "a\x00b"})
	if err == nil {
		t.Fatal("a Setup with a NUL byte was sent")
	}
	guest.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, rerr := guest.Read(make([]byte, 1)); n != 0 || rerr == nil {
		t.Errorf("the agent read %d bytes (%v), want none and the connection closed", n, rerr)
	}
}
