package agentvm

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/virtio/vsock"
)

// lazyConn dials the agent on its first Read or Write, so a Cmd holds a
// connection only from its Start on. Deadlines set before the dial bound
// it; one in the past (client.Cmd's way to cancel) ends a dial in flight.
type lazyConn struct {
	dial func(ctx context.Context) (net.Conn, error)
	ctx  context.Context

	mu      sync.Mutex
	conn    net.Conn
	err     error
	dialing bool
	cancel  context.CancelFunc
	rdl     time.Time
	wdl     time.Time
	closed  bool
}

func (vm *VM) lazyConn(ctx context.Context) *lazyConn {
	if ctx == nil {
		ctx = context.Background()
	}
	return &lazyConn{dial: vm.Dial, ctx: ctx}
}

// get returns the connection, dialing it on first use.
func (c *lazyConn) get() (net.Conn, error) {
	c.mu.Lock()
	if c.conn != nil || c.err != nil {
		defer c.mu.Unlock()
		return c.conn, c.err
	}
	if c.closed {
		c.mu.Unlock()
		return nil, net.ErrClosed
	}
	if c.dialing {
		// The client reads only after its first write returned, so this
		// is a misuse; fail rather than dial twice.
		c.mu.Unlock()
		return nil, fmt.Errorf("agentvm: connection to the agent still being dialed")
	}
	c.dialing = true
	ctx, cancel := context.WithCancel(c.ctx)
	if dl := earliest(c.rdl, c.wdl); !dl.IsZero() {
		ctx, cancel = context.WithDeadline(ctx, dl)
	}
	c.cancel = cancel
	c.mu.Unlock()

	conn, err := c.dial(ctx)
	if err != nil && ctx.Err() == context.DeadlineExceeded {
		err = fmt.Errorf("agentvm: dialing the agent: %w", os.ErrDeadlineExceeded)
	} else if err != nil {
		err = fmt.Errorf("agentvm: dialing the agent: %w", err)
	}
	cancel()

	c.mu.Lock()
	defer c.mu.Unlock()
	c.dialing, c.cancel = false, nil
	if err == nil && c.closed {
		conn.Close()
		err = net.ErrClosed
	}
	if err != nil {
		c.err = err
		return nil, err
	}
	if !c.rdl.IsZero() {
		conn.SetReadDeadline(c.rdl)
	}
	if !c.wdl.IsZero() {
		conn.SetWriteDeadline(c.wdl)
	}
	c.conn = conn
	return conn, nil
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func (c *lazyConn) Read(p []byte) (int, error) {
	conn, err := c.get()
	if err != nil {
		return 0, err
	}
	return conn.Read(p)
}

func (c *lazyConn) Write(p []byte) (int, error) {
	conn, err := c.get()
	if err != nil {
		return 0, err
	}
	return conn.Write(p)
}

func (c *lazyConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if c.cancel != nil {
		c.cancel()
	}
	if c.conn != nil {
		return c.conn.Close()
	}
	return nil
}

// setDeadline records a deadline before the dial, cancels a dial in
// flight for one in the past, and passes it on after.
func (c *lazyConn) setDeadline(t time.Time, read, write bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		switch {
		case read && write:
			return c.conn.SetDeadline(t)
		case read:
			return c.conn.SetReadDeadline(t)
		}
		return c.conn.SetWriteDeadline(t)
	}
	if read {
		c.rdl = t
	}
	if write {
		c.wdl = t
	}
	if c.cancel != nil && !t.IsZero() && !t.After(time.Now()) {
		c.cancel()
	}
	return nil
}

func (c *lazyConn) SetDeadline(t time.Time) error      { return c.setDeadline(t, true, true) }
func (c *lazyConn) SetReadDeadline(t time.Time) error  { return c.setDeadline(t, true, false) }
func (c *lazyConn) SetWriteDeadline(t time.Time) error { return c.setDeadline(t, false, true) }

func (c *lazyConn) LocalAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn.LocalAddr()
	}
	return vsock.Addr{CID: vsock.HostCID}
}

func (c *lazyConn) RemoteAddr() net.Addr {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		return c.conn.RemoteAddr()
	}
	return vsock.Addr{Port: agent.DefaultPort}
}
