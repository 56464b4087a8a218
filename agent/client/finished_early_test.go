package client

import (
	"context"
	"net"
	"testing"

	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/internal/sockpair"
)

// gatedConn holds every Write after the first until gate is closed.
type gatedConn struct {
	net.Conn
	writes int
	gate   chan struct{}
}

func (c *gatedConn) Write(b []byte) (int, error) {
	if c.writes++; c.writes > 1 {
		<-c.gate
	}
	return c.Conn.Write(b)
}

// TestAgentFinishedBeforeCredit: an agent that ran a command without
// output and closed the connection before the host's Credit frames were
// sent (the send fails with EPIPE) still gives the command's status: the
// Started, Close and Exit frames it sent are read, not replaced by the
// failed send's error (seen as "sending stdout Credit: broken pipe" when a
// fake agent answered at once).
func TestAgentFinishedBeforeCredit(t *testing.T) {
	host, guest, err := sockpair.New()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	gate := make(chan struct{})
	go func() {
		defer close(gate) // the host's Credit goes out after the close
		defer guest.Close()
		r, w := proto.NewReader(guest, proto.FromHost), proto.NewWriter(guest)
		if f, err := r.Next(); err != nil || f.Type != proto.TypeExec {
			t.Errorf("agent: first frame %v, %v; want Exec", f.Type, err)
			return
		}
		w.Send(proto.TypeStarted, 0, proto.AppendU32(nil, 9))
		w.Send(proto.TypeClose, proto.StreamStdout, nil)
		w.Send(proto.TypeClose, proto.StreamStderr, nil)
		w.Send(proto.TypeExit, 0, proto.Exit{Value: 0}.Append(nil))
	}()
	cmd := CommandAfterHello(context.Background(), &gatedConn{Conn: host, gate: gate}, proto.Version, "true")
	if err := cmd.Run(); err != nil {
		t.Fatalf("Run: %v; want the command's status 0", err)
	}
}
