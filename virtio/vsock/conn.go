package vsock

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Errors of connections, for callers that branch.
var (
	// ErrRefused: the guest answered a Dial with RST (nobody listens on
	// that port).
	ErrRefused = errors.New("vsock: connection refused by the guest")
	// ErrReset: the connection was reset (by the guest, a device reset, a
	// transport reset, or a protocol error) before it was closed cleanly.
	ErrReset = errors.New("vsock: connection reset")
	// ErrPeerClosed: a write after the guest shut down its receiving side.
	ErrPeerClosed = errors.New("vsock: the guest no longer receives on this connection")
	// ErrNotRunning: the guest's driver has not activated the device (or
	// reset it), so there is nobody to dial.
	ErrNotRunning = errors.New("vsock: the guest driver is not running")
	// ErrTooManyConns: MaxConns connections exist.
	ErrTooManyConns = errors.New("vsock: connection table full")
)

// Addr is a vsock address: a context ID and a port.
type Addr struct {
	CID  uint64
	Port uint32
}

// Network returns "vsock".
func (a Addr) Network() string { return "vsock" }

// String returns "CID:port".
func (a Addr) String() string { return fmt.Sprintf("%d:%d", a.CID, a.Port) }

// connState is where a connection is in its life.
type connState int

const (
	stateConnecting  connState = iota // host Dial: REQUEST to send or sent, awaiting RESPONSE
	stateForwarding                   // guest REQUEST awaiting the Unix socket forwarder
	stateEstablished                  // data flows (also after shutdowns, until RST)
	stateResetting                    // an RST is to be sent; then the connection is removed
	stateDone                         // removed from the table
)

// Conn is the host end of one vsock stream connection. It implements
// net.Conn; CloseWrite shuts down the host's sending side only. Its buffers
// are bounded both ways (Config.BufSize): a Write blocks while the guest
// has not taken what was written before, and the guest may not send more
// than the host side has room to keep.
type Conn struct {
	d         *Device
	hostPort  uint32
	guestPort uint32
	guestCID  uint64

	readReady  chan struct{} // a Read may proceed (data, EOF, reset)
	writeReady chan struct{} // a Write may proceed (room, reset)
	done       chan struct{} // closed when the connection leaves the table
	rdl, wdl   deadline

	mu    sync.Mutex
	state connState
	in    ring // guest → host, credit given to the guest
	out   ring // host → guest

	rxCnt   uint32 // bytes received from the guest
	fwdCnt  uint32 // bytes the host consumed (read or discarded)
	fwdSent uint32 // fwd_cnt last told to the guest
	txCnt   uint32 // bytes sent to the guest

	peerBufAlloc uint32 // the guest's buf_alloc
	peerFwdCnt   uint32 // the guest's fwd_cnt, never beyond txCnt

	peerShut uint32 // SHUTDOWN flags the guest sent
	sentShut uint32 // SHUTDOWN flags the device sent

	localClosed bool  // Close was called
	writeClosed bool  // CloseWrite was called
	resetErr    error // why the connection ended abnormally; nil for a clean end
	ended       bool  // the connection ended (reads drain, then EOF or resetErr)

	wantRequest   bool // host Dial: REQUEST not yet sent
	requestSent   bool
	wantResponse  bool // accepted guest REQUEST: RESPONSE not yet sent
	wantCredit    bool // a CREDIT_UPDATE is due
	creditReqSent bool // a CREDIT_REQUEST is outstanding

	dialDone chan struct{} // host Dial: closed when the outcome is known
	dialErr  error

	fwdDone bool     // forwarder: the decision is in
	fwdPeer net.Conn // forwarder: the Unix socket to splice to, until spliced
	fwdErr  error

	inTable bool // in the worker's table (the worker's own field)

	killTimer *time.Timer // host Close: RST if the guest has not finished the close in time

	// Owned by the device's pending list (Device.pmu).
	queued bool
}

func (d *Device) newConn(hostPort, guestPort uint32, st connState) *Conn {
	return &Conn{
		d: d, hostPort: hostPort, guestPort: guestPort, guestCID: d.cid,
		readReady: make(chan struct{}, 1), writeReady: make(chan struct{}, 1), done: make(chan struct{}),
		rdl: makeDeadline(), wdl: makeDeadline(),
		state: st, in: ring{size: d.bufSize}, out: ring{size: d.bufSize},
	}
}

func (c *Conn) key() uint64 { return connKey(c.hostPort, c.guestPort) }

func connKey(hostPort, guestPort uint32) uint64 { return uint64(hostPort)<<32 | uint64(guestPort) }

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// wakeLocked wakes a blocked Read and Write to look at the state again.
func (c *Conn) wakeLocked() {
	signal(c.readReady)
	signal(c.writeReady)
}

// endLocked ends the connection for the host side: reads drain what is
// buffered and then return EOF (err nil) or err; writes fail.
func (c *Conn) endLocked(err error) {
	if !c.ended {
		c.ended = true
		c.resetErr = err
	}
	c.out.reset()
	c.wakeLocked()
}

// LocalAddr returns the host's address: CID 2 and the host port.
func (c *Conn) LocalAddr() net.Addr { return Addr{CID: HostCID, Port: c.hostPort} }

// RemoteAddr returns the guest's address.
func (c *Conn) RemoteAddr() net.Addr { return Addr{CID: c.guestCID, Port: c.guestPort} }

// Read reads stream bytes the guest sent. It returns io.EOF once the guest
// shut down its sending side (or closed) and everything before was read,
// ErrReset after an abnormal end.
func (c *Conn) Read(p []byte) (int, error) {
	for {
		c.mu.Lock()
		if c.localClosed {
			c.mu.Unlock()
			return 0, net.ErrClosed
		}
		if c.in.len() > 0 {
			if len(p) == 0 {
				c.mu.Unlock()
				return 0, nil
			}
			k := c.in.read(p)
			c.fwdCnt += uint32(k)
			c.creditAfterReadLocked()
			c.mu.Unlock()
			return k, nil
		}
		if c.peerShut&ShutdownSend != 0 || c.ended {
			err := c.resetErr
			if err == nil || c.peerShut&ShutdownSend != 0 {
				err = io.EOF
			}
			c.mu.Unlock()
			return 0, err
		}
		c.mu.Unlock()
		if len(p) == 0 {
			return 0, nil
		}
		dl := c.rdl.wait()
		if isClosed(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		select {
		case <-c.readReady:
		case <-dl:
		}
	}
}

// creditAfterReadLocked schedules a CREDIT_UPDATE when the guest's view of
// the free buffer has become small and reading has freed a good part of
// it, so a guest that ran out of credit learns it may go on.
func (c *Conn) creditAfterReadLocked() {
	if c.state != stateEstablished || c.wantCredit {
		return
	}
	size := uint32(c.in.size)
	guestFree := size - min(size, c.rxCnt-c.fwdSent)
	if guestFree < size/2 && c.fwdCnt-c.fwdSent >= size/4 {
		c.wantCredit = true
		c.d.schedule(c)
	}
}

// Write queues p for the guest, blocking while the buffer is full.
func (c *Conn) Write(p []byte) (int, error) {
	n := 0
	for {
		c.mu.Lock()
		switch {
		case c.localClosed:
			c.mu.Unlock()
			return n, net.ErrClosed
		case c.writeClosed:
			c.mu.Unlock()
			return n, fmt.Errorf("vsock: write after CloseWrite: %w", net.ErrClosed)
		case c.ended:
			err := c.resetErr
			if err == nil {
				err = ErrPeerClosed
			}
			c.mu.Unlock()
			return n, err
		case c.peerShut&ShutdownRcv != 0:
			c.mu.Unlock()
			return n, ErrPeerClosed
		}
		if k := c.out.write(p[n:]); k > 0 {
			n += k
			c.d.schedule(c)
		}
		c.mu.Unlock()
		if n == len(p) {
			return n, nil
		}
		dl := c.wdl.wait()
		if isClosed(dl) {
			return n, os.ErrDeadlineExceeded
		}
		select {
		case <-c.writeReady:
		case <-dl:
		}
	}
}

// Close closes the connection: what was written is still sent (while the
// guest grants credit), then SHUTDOWN; unread data is dropped. The guest
// has Config.CloseTimeout to finish the close before the device resets it.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.localClosed {
		return net.ErrClosed
	}
	c.localClosed = true
	c.fwdCnt += uint32(c.in.len())
	c.in.reset()
	c.wakeLocked()
	if c.ended || c.state == stateDone {
		return nil
	}
	c.killTimer = time.AfterFunc(c.d.closeTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.state == stateEstablished {
			c.state = stateResetting
			c.d.schedule(c)
		}
	})
	c.d.schedule(c)
	return nil
}

// CloseWrite shuts down the host's sending side: the guest reads EOF after
// what was written. Reading goes on.
func (c *Conn) CloseWrite() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.localClosed {
		return net.ErrClosed
	}
	if !c.writeClosed {
		c.writeClosed = true
		c.d.schedule(c)
	}
	return nil
}

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { c.rdl.set(t); return nil }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }

// Done returns a channel closed when the connection has left the device's
// table (closed by both sides, or reset).
func (c *Conn) Done() <-chan struct{} { return c.done }

// peerFreeLocked is how many bytes the guest can take now: its buf_alloc
// less what was sent and not yet forwarded, never negative.
func (c *Conn) peerFreeLocked() uint32 {
	inflight := c.txCnt - c.peerFwdCnt // peerFwdCnt is never past txCnt
	if inflight >= c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - inflight
}

// creditFromLocked takes the guest's credit figures from a header it sent.
// buf_alloc is taken as is (it only bounds what the device sends); a
// fwd_cnt that goes backwards or past what was sent is a lie and ignored.
// It reports whether the guest may now take more.
func (c *Conn) creditFromLocked(h *Header) (more, lie bool) {
	before := c.peerFreeLocked()
	c.peerBufAlloc = h.BufAlloc
	if adv := h.FwdCnt - c.peerFwdCnt; adv <= c.txCnt-c.peerFwdCnt {
		c.peerFwdCnt = h.FwdCnt
	} else {
		lie = true
	}
	after := c.peerFreeLocked()
	if after > before {
		c.creditReqSent = false
	}
	return after > before, lie
}

// shutWantLocked is the SHUTDOWN flags the host side has asked for.
func (c *Conn) shutWantLocked() uint32 {
	var f uint32
	if c.writeClosed || c.localClosed {
		f |= ShutdownSend
	}
	if c.localClosed {
		f |= ShutdownRcv
	}
	return f
}

// pickLocked decides the next packet the device sends on c into a chain
// with room payload bytes: the op, the payload length and SHUTDOWN flags.
// OpInvalid means nothing is due.
func (c *Conn) pickLocked(room uint32) (op Op, n uint32, flags uint32) {
	switch c.state {
	case stateResetting:
		return OpRST, 0, 0
	case stateConnecting:
		if c.localClosed { // an abandoned Dial
			if c.requestSent {
				return OpRST, 0, 0
			}
			return OpInvalid, 0, 0
		}
		if c.wantRequest {
			return OpRequest, 0, 0
		}
		return OpInvalid, 0, 0
	case stateEstablished:
	default:
		return OpInvalid, 0, 0
	}
	if c.wantResponse {
		return OpResponse, 0, 0
	}
	if c.out.len() > 0 && c.peerShut&ShutdownRcv == 0 {
		free := c.peerFreeLocked()
		switch {
		case free > 0 && room > 0:
			return OpRW, min(uint32(c.out.len()), free, room, MaxPayload), 0
		case free == 0 && !c.creditReqSent:
			return OpCreditRequest, 0, 0
		case free > 0: // no room in this chain for data: say something harmless
			return OpCreditUpdate, 0, 0
		}
	}
	flushed := c.out.len() == 0 || c.peerShut&ShutdownRcv != 0
	if want := c.shutWantLocked(); flushed && want&^c.sentShut != 0 {
		return OpShutdown, 0, want | c.sentShut
	}
	if c.wantCredit {
		return OpCreditUpdate, 0, 0
	}
	return OpInvalid, 0, 0
}

// wantsLocked reports whether c has a packet to send now.
func (c *Conn) wantsLocked() bool {
	op, _, _ := c.pickLocked(MaxPayload)
	return op != OpInvalid
}
