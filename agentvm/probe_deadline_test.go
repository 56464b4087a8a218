package agentvm

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// deadlineConn records the deadlines set on it and calls onRead after
// its first successful Read.
type deadlineConn struct {
	net.Conn
	onRead func()
	once   sync.Once

	mu        sync.Mutex
	deadlines []time.Time
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.once.Do(c.onRead)
	}
	return n, err
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	if !t.IsZero() && time.Until(t) < 0 {
		// The cancellation's: late, as a goroutine that was slow to run.
		time.Sleep(20 * time.Millisecond)
	}
	c.mu.Lock()
	c.deadlines = append(c.deadlines, t)
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *deadlineConn) recorded() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.deadlines...)
}

// TestKeptProbeDeadline: the connection waitAgent keeps for Setup
// carries no deadline: not its Hello's (helloTimeout), cleared when it is
// kept, nor the one that ends the greeting when ctx ends, which used to
// land after the clearing when ctx ended as the agent's Hello arrived
// (context.AfterFunc's function was already on its way): the Setup on it
// then failed at once. A greeting ctx ended is now a failed one.
func TestKeptProbeDeadline(t *testing.T) {
	for _, cancelOnHello := range []bool{false, true} {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var conn *deadlineConn
		dial := func(context.Context) (net.Conn, error) {
			host, guest := net.Pipe()
			go func() {
				defer guest.Close()
				proto.NewReader(guest, proto.FromHost).Next()
				proto.NewWriter(guest).Send(proto.TypeHello, 0, proto.Hello{Min: proto.Version, Max: proto.Version}.Append(nil))
				proto.NewReader(guest, proto.FromHost).Next() // until the host closes
			}()
			conn = &deadlineConn{Conn: host, onRead: func() {}}
			if cancelOnHello {
				conn.onRead = cancel
			}
			return conn, nil
		}
		vm := newAgentVM(dial, make(chan struct{}), func() error { return nil }, newConsoleRing(nil, ConsoleLines), nil)
		vm.keepProbe = true
		err := vm.waitAgent(ctx, 10*time.Second, exitPowerOff)
		probe, _ := vm.takeProbe()
		if probe != nil {
			defer probe.Close()
		}
		if cancelOnHello {
			var ae *AgentError
			if !errors.As(err, &ae) || ae.Reason != ReasonCanceled || probe != nil {
				t.Errorf("ctx ended as the Hello came: waitAgent = %v, probe kept %v; want ReasonCanceled and no probe", err, probe != nil)
			}
			continue
		}
		if err != nil || probe == nil {
			t.Fatalf("waitAgent = %v, probe kept %v", err, probe != nil)
		}
		time.Sleep(50 * time.Millisecond) // for a late deadline to land
		if d := conn.recorded(); len(d) == 0 || !d[len(d)-1].IsZero() {
			t.Errorf("the kept probe's deadlines were %v: the last one is not cleared", d)
		}
	}
}
