// Package vsock is the virtio socket device (Virtio 1.2 §5.10) in user
// space: the guest's AF_VSOCK stream connections to the host (CID 2) end
// in this process, not in the host kernel. There is no vhost-vsock module,
// no host CID space to share, and no host kernel code the guest can reach.
//
// The host side is Go: Device.Dial connects to a guest port and
// Device.Listen accepts guest connections to a host port, both as net.Conn;
// Config.UDSPath adds a Unix socket that speaks Firecracker's hybrid vsock
// convention for other programs (see hybrid.go).
//
// Protocol. Packets are a 44-byte header and a payload. Connections are
// keyed by (host port, guest port); the table holds at most
// Config.MaxConns. Every packet carries the sender's receive buffer size
// (buf_alloc) and how much of it its reader consumed (fwd_cnt): a sender
// may have at most buf_alloc - (tx_cnt - peer_fwd_cnt) bytes in flight.
// The device keeps that rule both ways. Each connection has one bounded
// buffer per direction (Config.BufSize): the guest gets credit for the
// host-side buffer, and a guest that sends past it has its connection
// reset (nothing is dropped silently, nothing grows); host writes block
// until the guest's credit lets them through. The guest's own figures are
// hostile input: its fwd_cnt is taken only when it lies between what it
// said before and what was sent, and its buf_alloc only limits what the
// device sends.
//
// One worker goroutine per activation takes the guest's packets from the
// transmit queue, fills receive buffers with what the connections have to
// say (round robin), and raises the event queue's TRANSPORT_RESET. Host
// goroutines (Read, Write, Close, Dial) put connections on a pending list
// and wake it. When the guest posts no receive buffers the worker stops
// taking its packets as soon as an answer it owes (an RST for a port
// nobody listens on) has nowhere to go: the guest's own transmit ring
// then fills up.
//
// The guest is hostile. A transmit chain shorter than a header or with a
// device-writable buffer, a receive chain with a device-readable buffer or
// too small for a header, and an event chain too small for an event break
// the queue protocol: Activation.Fail is called and the worker stops.
// Bad headers are answered as Check decides and counted (Counters).
package vsock

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Defaults for the zero values of Config.
const (
	DefaultQueueSize = 256
	// DefaultMaxConns bounds what a guest can make the VMM hold to
	// DefaultMaxConns*2*DefaultBufSize = 128 MiB of connection buffers.
	DefaultMaxConns     = 256
	DefaultBufSize      = 256 << 10 // Linux's VIRTIO_VSOCK_DEFAULT_BUF_SIZE
	DefaultBacklog      = 128
	DefaultCloseTimeout = 2 * time.Second
	// MinBufSize and MaxBufSize bound Config.BufSize.
	MinBufSize = 4 << 10
	MaxBufSize = 16 << 20
)

// Host ports for Dial are taken from [ephemeralLo, ephemeralHi), in turn.
const (
	ephemeralLo = 1 << 30
	ephemeralHi = 1 << 31
)

// Config describes one vsock device.
type Config struct {
	// CID is the guest's context ID; 0 means DefaultGuestCID. It must be
	// at least 3 and below 0xffffffff.
	CID uint64
	// UDSPath, when set, is a Unix socket the device listens on for
	// Firecracker-style hybrid vsock (see hybrid.go); guest connections to
	// host ports no Listen covers go to UDSPath_PORT.
	UDSPath string
	// MaxConns caps the connection table; 0 means DefaultMaxConns.
	MaxConns int
	// BufSize is each connection's buffer per direction; 0 means
	// DefaultBufSize. A connection allocates its buffers on first use, so
	// the worst case is MaxConns*2*BufSize bytes.
	BufSize int
	// Backlog is how many accepted guest connections a Listener holds
	// before further REQUESTs are refused; 0 means DefaultBacklog.
	Backlog int
	// QueueSize is the largest queue size offered; 0 means DefaultQueueSize.
	QueueSize uint16
	// CloseTimeout is how long the guest has to finish a close the host
	// began (its RST) before the device resets the connection; 0 means
	// DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Logger receives warnings and guest errors (rate limited); nil
	// discards them.
	Logger *slog.Logger

	now func() time.Time // the rate limiter's clock (tests)
}

// Device is a virtio-vsock device. It implements virtio.Device.
type Device struct {
	cid          uint64
	config       [ConfigSize]byte
	queueSize    uint16
	maxConns     int
	bufSize      int
	backlog      int
	closeTimeout time.Duration
	log          *slog.Logger
	glog         *guestlog.Logger
	counts       counters
	common       *virtio.Common

	kick chan struct{} // wakes the worker: queue kicks and host-side work

	// pmu guards the pending list, the dial queue and running.
	pmu        sync.Mutex
	running    bool
	pend       []*Conn // connections with something to send, FIFO
	pendHead   int
	dials      []*Conn // Dials for the worker to place
	wantTReset bool    // TransportReset asked for

	lmu       sync.Mutex
	listeners map[uint32]*Listener
	closed    bool

	run    atomic.Pointer[run]
	hybrid *hybrid        // nil without UDSPath
	serves sync.WaitGroup // forwarded connections' goroutines
}

// run is one activation. Pause ends the worker's loop (the connections,
// their buffers and the pending list stay); Resume starts a new loop.
type run struct {
	w      *worker
	cancel context.CancelFunc // ends the activation: loop and forwarders
	wg     sync.WaitGroup     // forwarders' dials

	loopCancel context.CancelFunc
	loopWG     sync.WaitGroup
}

// startLoop runs the worker's loop under a new child of its activation's
// context.
func (r *run) startLoop() {
	ctx, cancel := context.WithCancel(r.w.ctx)
	r.w.lctx, r.loopCancel = ctx, cancel
	r.loopWG.Add(1)
	go func() {
		defer r.loopWG.Done()
		r.w.loop()
	}()
}

var (
	_ virtio.Device   = (*Device)(nil)
	_ virtio.Pauser   = (*Device)(nil)
	_ virtio.Stateful = (*Device)(nil)
)

// New checks cfg and returns the device. With UDSPath it listens there at
// once (host programs may connect before the guest's driver is up; their
// CONNECTs then fail until it is).
func New(cfg Config) (*Device, error) {
	cid := cfg.CID
	if cid == 0 {
		cid = DefaultGuestCID
	}
	if cid <= HostCID || cid > maxGuestCID {
		return nil, fmt.Errorf("vsock: guest CID %d outside 3..%d", cid, uint64(maxGuestCID))
	}
	qs := cfg.QueueSize
	if qs == 0 {
		qs = DefaultQueueSize
	}
	if qs < 2 || qs&(qs-1) != 0 || qs > queue.MaxSize {
		return nil, fmt.Errorf("vsock: queue size %d is not a power of two in 2..%d", qs, queue.MaxSize)
	}
	d := &Device{
		cid: cid, queueSize: qs,
		maxConns: cmp0(cfg.MaxConns, DefaultMaxConns), bufSize: cmp0(cfg.BufSize, DefaultBufSize),
		backlog: cmp0(cfg.Backlog, DefaultBacklog), closeTimeout: cfg.CloseTimeout,
		log: cfg.Logger, kick: make(chan struct{}, 1), listeners: map[uint32]*Listener{},
	}
	if d.closeTimeout <= 0 {
		d.closeTimeout = DefaultCloseTimeout
	}
	if d.bufSize < MinBufSize || d.bufSize > MaxBufSize {
		return nil, fmt.Errorf("vsock: buffer size %d outside %d..%d", d.bufSize, MinBufSize, MaxBufSize)
	}
	if d.maxConns < 1 || d.backlog < 1 {
		return nil, fmt.Errorf("vsock: MaxConns %d and Backlog %d must be positive", cfg.MaxConns, cfg.Backlog)
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.glog = guestlog.New(d.log, cfg.now)
	d.common = virtio.NewCommon("virtio-vsock", d.Features(), numQueues, qs)
	binary.LittleEndian.PutUint64(d.config[cfgGuestCID:], cid)
	if cfg.UDSPath != "" {
		h, err := newHybrid(d, cfg.UDSPath)
		if err != nil {
			return nil, err
		}
		d.hybrid = h
	}
	return d, nil
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// CID returns the guest's context ID.
func (d *Device) CID() uint64 { return d.cid }

// Type returns virtio.TypeVsock.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeVsock }

// Features returns VERSION_1, EVENT_IDX and INDIRECT_DESC; no socket
// feature bit, which means stream sockets only.
func (d *Device) Features() uint64 {
	return virtio.FVersion1 | virtio.FEventIdx | virtio.FIndirectDesc
}

// NumQueues returns 3: rx, tx and event.
func (d *Device) NumQueues() int { return numQueues }

// MaxQueueSize returns the largest queue size offered.
func (d *Device) MaxQueueSize() uint16 { return d.queueSize }

// ConfigSize returns the size of struct virtio_vsock_config.
func (d *Device) ConfigSize() int { return ConfigSize }

// ReadConfig copies configuration bytes (the guest CID) at off into p.
func (d *Device) ReadConfig(off int, p []byte) { virtio.CopyConfig(p, d.config[:], off) }

// WriteConfig ignores writes: the configuration is read-only.
func (d *Device) WriteConfig(off int, p []byte) {}

// Counters returns a snapshot of the device's counters.
func (d *Device) Counters() Counters { return d.counts.snapshot() }

// Activate starts the worker on the queues the driver enabled.
func (d *Device) Activate(ctx context.Context, a virtio.Activation) error {
	return d.common.Activate(a, func(a virtio.Activation) error {
		ctx, cancel := context.WithCancel(ctx)
		r := &run{cancel: cancel}
		r.w = newWorker(d, ctx, a, r)
		d.pmu.Lock()
		d.running = true
		d.pmu.Unlock()
		d.run.Store(r)
		r.startLoop()
		return nil
	})
}

// Pause ends the worker's loop after the round it is in: every chain it
// took is completed. Connections stay: host writers block once the
// guest's credit is used up (or buffer within it), host Dials and reads
// wait; all of it goes on after Resume.
func (d *Device) Pause() error {
	return d.common.Pause(func() error {
		if r := d.run.Load(); r != nil {
			r.loopCancel()
			r.loopWG.Wait()
		}
		return nil
	})
}

// Resume starts the worker's loop again; it first serves what the guest
// queued and the host asked for meanwhile.
func (d *Device) Resume() error {
	return d.common.Resume(func() error {
		if r := d.run.Load(); r != nil {
			r.startLoop()
		}
		return nil
	})
}

// Notify wakes the worker. It never blocks.
func (d *Device) Notify(q int) { d.wake() }

func (d *Device) wake() { signal(d.kick) }

// Reset stops the worker and resets every connection (the host side sees
// ErrReset); listeners stay.
func (d *Device) Reset() error { return d.common.Reset(d.stop) }

func (d *Device) stop() error {
	d.pmu.Lock()
	d.running = false
	d.pmu.Unlock()
	r := d.run.Swap(nil)
	if r == nil {
		return nil
	}
	r.cancel()
	r.loopWG.Wait()
	r.wg.Wait() // the forwarders' dials
	r.w.resetAll(ErrReset)
	d.pmu.Lock()
	dials := d.dials
	d.dials, d.pend, d.pendHead = nil, d.pend[:0], 0
	d.pmu.Unlock()
	for _, c := range dials {
		c.mu.Lock()
		c.dialErr = ErrNotRunning
		c.state = stateDone
		close(c.dialDone)
		c.mu.Unlock()
	}
	return nil
}

// Close stops the device, closes its listeners and the Unix socket, and
// waits for every goroutine it started.
func (d *Device) Close() error {
	return d.common.Close(d.stop, func() error {
		d.lmu.Lock()
		d.closed = true
		ls := make([]*Listener, 0, len(d.listeners))
		for _, l := range d.listeners {
			ls = append(ls, l)
		}
		d.lmu.Unlock()
		for _, l := range ls {
			l.Close()
		}
		var err error
		if d.hybrid != nil {
			err = d.hybrid.close()
		}
		d.serves.Wait()
		return err
	})
}

// schedule puts c on the pending list (once) and wakes the worker. The
// caller may hold c.mu.
func (d *Device) schedule(c *Conn) {
	d.pmu.Lock()
	if !c.queued && d.running {
		c.queued = true
		d.pend = append(d.pend, c)
	}
	d.pmu.Unlock()
	d.wake()
}

// popPending takes the first pending connection, or nil.
func (d *Device) popPending() *Conn {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	if d.pendHead == len(d.pend) {
		return nil
	}
	c := d.pend[d.pendHead]
	d.pend[d.pendHead] = nil
	d.pendHead++
	if d.pendHead == len(d.pend) {
		d.pend, d.pendHead = d.pend[:0], 0
	} else if d.pendHead > 64 && d.pendHead > len(d.pend)/2 {
		n := copy(d.pend, d.pend[d.pendHead:])
		clear(d.pend[n:])
		d.pend, d.pendHead = d.pend[:n], 0
	}
	c.queued = false
	return c
}

func (d *Device) hasPending() bool {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	return d.pendHead < len(d.pend) || len(d.dials) > 0 || d.wantTReset
}

// Dial connects to the guest's port. It fails with ErrNotRunning when the
// guest's driver is not up, ErrRefused when nothing listens there, and
// ctx's error when ctx ends first.
func (d *Device) Dial(ctx context.Context, port uint32) (*Conn, error) {
	c := d.newConn(0, port, stateConnecting)
	c.dialDone = make(chan struct{})
	d.pmu.Lock()
	if !d.running {
		d.pmu.Unlock()
		return nil, fmt.Errorf("vsock: dial guest port %d: %w", port, ErrNotRunning)
	}
	d.dials = append(d.dials, c)
	d.pmu.Unlock()
	d.wake()
	select {
	case <-c.dialDone:
	case <-ctx.Done():
		c.mu.Lock()
		select {
		case <-c.dialDone: // decided meanwhile
		default:
			c.localClosed = true
			c.dialErr = ctx.Err()
			c.d.schedule(c) // the worker sends RST if REQUEST went out, and drops it
			c.mu.Unlock()
			return nil, fmt.Errorf("vsock: dial guest port %d: %w", port, ctx.Err())
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	err := c.dialErr
	c.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("vsock: dial guest port %d: %w", port, err)
	}
	return c, nil
}

// TransportReset drops every connection (the host side sees ErrReset) and
// tells the guest with a TRANSPORT_RESET event, as after a snapshot is
// restored. The event waits for an event buffer from the driver. It is a
// no-op when the device is not running.
func (d *Device) TransportReset() {
	d.pmu.Lock()
	if d.running {
		d.wantTReset = true
	}
	d.pmu.Unlock()
	d.wake()
}

// Listener accepts guest connections to one host port.
type Listener struct {
	d    *Device
	port uint32
	ch   chan *Conn

	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

// Listen accepts guest connections to host port. Connections are
// established (RESPONSE sent) before Accept returns them, as with TCP;
// beyond Config.Backlog unaccepted ones, REQUESTs are refused.
func (d *Device) Listen(port uint32) (*Listener, error) {
	d.lmu.Lock()
	defer d.lmu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("vsock: listen on port %d: %w", port, net.ErrClosed)
	}
	if d.listeners[port] != nil {
		return nil, fmt.Errorf("vsock: listen on port %d: port in use", port)
	}
	l := &Listener{d: d, port: port, ch: make(chan *Conn, d.backlog), done: make(chan struct{})}
	d.listeners[port] = l
	return l, nil
}

func (d *Device) listener(port uint32) *Listener {
	d.lmu.Lock()
	defer d.lmu.Unlock()
	return d.listeners[port]
}

// offer hands an established connection to the listener; false when its
// backlog is full or it is closed.
func (l *Listener) offer(c *Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	select {
	case l.ch <- c:
		return true
	default:
		return false
	}
}

// Accept waits for the next guest connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// AcceptConn is Accept returning the concrete type.
func (l *Listener) AcceptConn() (*Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening and closes connections not yet accepted.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return net.ErrClosed
	}
	l.closed = true
	close(l.done)
	l.mu.Unlock()
	l.d.lmu.Lock()
	if l.d.listeners[l.port] == l {
		delete(l.d.listeners, l.port)
	}
	l.d.lmu.Unlock()
	for {
		select {
		case c := <-l.ch:
			c.Close()
		default:
			return nil
		}
	}
}

// Addr returns the host address listened on.
func (l *Listener) Addr() net.Addr { return Addr{CID: HostCID, Port: l.port} }
