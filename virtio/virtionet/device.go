// Package virtionet is the virtio network device (Virtio 1.2 §5.1) with one
// or more receive/transmit queue pairs and a control queue on a host
// Backend, normally a TAP device from virtio/virtionet/tap. It implements
// virtio.Device and knows nothing of the transport. (The package is named virtionet so that importers need no alias
// next to the standard library's net.)
//
// Features: VERSION_1, EVENT_IDX and INDIRECT_DESC; MAC (the configured
// guest MAC), STATUS (link always up), MTU (the configured MTU),
// MRG_RXBUF, and the control queue: CTRL_VQ, CTRL_RX, CTRL_VLAN,
// CTRL_MAC_ADDR, and CTRL_GUEST_OFFLOADS with receive offloads. When
// the backend carries virtio-net headers (Backend.VnetHdr) and supports
// offloads, CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6 and HOST/GUEST_ECN
// are offered as far as the backend supports them; at activation the
// backend is told (SetOffload, i.e. TUNSETOFFLOAD) which offloads the guest
// accepted, so the host only gives the device frames the guest can take.
// Without a vnet-header backend no offload is offered and the device strips
// the header on transmit and writes a zero one on receive.
//
// MRG_RXBUF. When negotiated, a received frame larger than one receive
// chain is spread over as many as it needs; num_buffers in the first
// chain's header says how many, and their used entries appear together
// (queue.PushUsed: one used idx update; the interrupt decision, with
// EVENT_IDX, covers them all), because Linux reads num_buffers and then
// expects that many entries. Linux then posts page-fragment buffers of
// about 1.5 KiB instead of 65562-byte chains with GUEST_TSO. While the ring
// is empty the chains taken stay with the frame; if they hold every
// descriptor of the ring the frame can never fit: it is dropped (counted)
// and the chains kept for the next frame. A chain shorter than the header
// (forbidden by the spec) drops the frame, and the chains taken for it go
// back with length 0, which Linux counts as short frames and reposts.
// Without MRG_RXBUF each chain holds a whole frame and num_buffers is 1.
//
// Data path (per pair). A transmit goroutine copies each
// chain out of guest memory once (header and frame, at most
// HeaderLen+MaxFrameLen bytes), checks it, offers it to the FrameHandler,
// and writes it to the backend. It parks on the transmit queue's kick
// eventfd in the runtime's poller (virtio.KickWaiter: the one KVM signals
// on a guest kick, or the device's own, which Notify signals), so a guest
// kick wakes the goroutine that sends the frames; it publishes their completions in
// batches of up to 64 with one used idx store. A receive goroutine reads one frame at a
// time from the backend into a buffer of its own and copies it into the next
// receive chain (or chains). On a PollQueue backend (FileBackend: TAPs,
// sockets) it waits itself, with ppoll on the backend's descriptor beside
// the receive queue's kick eventfd (taken from the transport like the
// transmit queue's, except queue 2's), so neither a frame nor a kick goes
// through the runtime's poller or another goroutine. When the guest's receive ring is empty it holds that one
// frame, re-enables notifications and sleeps until the guest kicks: the
// host queue (the TAP's) backs up and the host drops, never the device. A
// receive chain too small for a frame is kept for the next frame and the
// frame dropped and counted. Interrupts are batched: signalled when the
// backend has no more frames queued, every 64 frames, and before waiting for
// buffers.
//
// The control queue (queue 2) is served by a third goroutine. Each command
// is copied out of guest memory once and checked (class, command, exact
// length, the class's feature negotiated); anything malformed, unknown or
// not negotiated is answered VIRTIO_NET_ERR and counted (CtrlErrors); a
// chain with no byte for the ack breaks the protocol. Guest offloads are
// applied (the backend's SetOffload and the receive path); the MAC set with
// MAC_ADDR_SET is recorded and shown in the config space; receive modes,
// MAC filter tables (MACTableMax entries each) and VLAN filters are recorded
// (Device.Control) but not applied: the device passes on every frame the
// backend gives it, and the guest's stack drops what it does not want.
// Reset forgets all of it; snapshots keep it (state version 2 and later).
// GUEST_ANNOUNCE, CTRL_RX_EXTRA, RSS and HASH_REPORT are not offered.
//
// Multiqueue. A MultiQueue backend with N > 1 queues (a multi-queue TAP)
// makes the device offer VIRTIO_NET_F_MQ with max_virtqueue_pairs N: queues
// receiveq1, transmitq1, ..., receiveqN, transmitqN, controlq (2N+1). Each
// pair has its own receive and transmit goroutines on its own backend
// queue, and its own interrupts. Until the driver sends
// VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET only the first pair is served, as the
// spec says; afterwards the first n (Linux sets n = online CPUs). Pairs
// beyond n are idle: their goroutines are stopped before the command's
// ack (no frame lands in their receive queues afterwards), their backend
// queues detached so the host steers nothing there, and a kick of their
// queues is counted (IdleQueueKicks) and ignored; chains the guest left in
// them are served if the pair is used again. A count of 0, above N, of the
// wrong length, or sent without MQ negotiated is answered VIRTIO_NET_ERR
// and counted. The frame handler is called by one transmit goroutine at a
// time; its replies go to the receive queue of the pair that asked. A
// driver that does not take MQ gets the one-pair device (controlq is queue
// 2), and a backend with one queue offers no MQ: the device is then exactly
// the one-pair device. Snapshots (state version 3) carry N and n; the
// restored device must have N backend queues.
//
// The frame handler. Its replies (DHCP OFFER/ACK/NAK) go into the receive
// ring from the transmit goroutine, under the lock that the receive
// goroutine holds while it fills a chain. A reply never waits for room: with
// the ring empty it is dropped and counted (RxDropReplyNoRoom) and the DHCP
// client retries.
//
// The guest is hostile. A transmit chain with a device-writable buffer, with
// fewer than 12 readable bytes or more than HeaderLen+MaxFrameLen, and a
// receive chain with a device-readable buffer break the protocol: the device
// calls Activation.Fail with an error that says "guest gave ..." (matching
// queue.ErrGuest) and stops serving that queue. Frames that are merely bad
// (runts, over the MTU, offloads not negotiated, checksum offsets outside
// the frame) are dropped and counted (Counters).
package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	stdnet "net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/kickfd"
	"github.com/corral-vmm/corral/virtio/queue"
)

// DefaultQueueSize is the queue size offered when Config.QueueSize is 0.
const DefaultQueueSize = 256

// Config describes one virtio-net device.
type Config struct {
	// Backend is the host side (required). The device owns it: Close
	// closes it.
	Backend Backend
	// MAC is the guest's MAC address, offered with VIRTIO_NET_F_MAC
	// (required; a unicast address, e.g. from hostnet).
	MAC stdnet.HardwareAddr
	// MTU is offered with VIRTIO_NET_F_MTU and bounds frames without GSO
	// both ways (plus an Ethernet header and one VLAN tag); 0 means
	// DefaultMTU. Give the TAP the same MTU.
	MTU int
	// QueueSize is the largest queue size offered (a power of two); 0 means
	// DefaultQueueSize.
	QueueSize uint16
	// Handler, when set, sees every transmitted frame first (see
	// FrameHandler).
	Handler FrameHandler
	// NoOffloads turns the checksum and segmentation offloads off even when
	// the backend supports them.
	NoOffloads bool
	// Logger receives warnings and guest errors (rate limited); nil
	// discards them.
	Logger *slog.Logger

	now func() time.Time // the rate limiter's clock; nil is time.Now (tests set it)
}

// Device is a virtio-net device. It implements virtio.Device.
type Device struct {
	be        Backend
	log       *slog.Logger
	mac       [6]byte
	mtu       int
	features  uint64
	config    [ConfigSize]byte
	queueSize uint16
	handler   FrameHandler
	counts    counters
	glog      *guestlog.Logger // queue failures, rate limited

	common *virtio.Common      // activation state; serialises Activate, Reset, Close
	active atomic.Pointer[run] // the running goroutines, for Notify
	kicks  queueKicks          // what the transmit goroutines and receive loops sleep on

	// queues are the backend's queues, one per queue pair: the device offers
	// max_virtqueue_pairs = len(queues), and MQ when that is two or more.
	queues []Queue
	mq     MultiQueue // the backend when it has several queues; nil otherwise
	qmu    sync.Mutex // guards qOn
	qOn    []bool     // which backend queues the host may steer frames to

	handlerMu sync.Mutex // one FrameHandler call at a time, whichever transmit goroutine makes it

	mu           sync.Mutex // guards config, ctrl and ctrlRestored (the control goroutine writes them)
	ctrl         ctrlState  // what the driver set on the control queue, and the MAC in force
	ctrlRestored bool       // ctrl came from RestoreState: the next activation keeps it
}

// run is one activation: its goroutines and how to stop them. Pause stops
// the goroutines and Resume starts new ones on the same receivers and
// transmitters. Each queue pair has its own goroutines; only the first
// ctrl.pairs pairs (1 until the driver sends VQ_PAIRS_SET) are served.
type run struct {
	d      *Device
	pairs  []*pair         // one per queue pair the driver may use: max_virtqueue_pairs with MQ, else 1
	ctrl   *controller     // nil without CTRL_VQ or with the control queue off
	ctrlQ  int             // the control queue's index: 2 without MQ, 2 × max_virtqueue_pairs with it
	parent context.Context // the activation's context
	cancel context.CancelFunc
	ctx    context.Context // the running goroutines' context; pairs started later get children of it
	wg     sync.WaitGroup  // every goroutine of the run

	mu sync.Mutex // serialises starting and stopping pairs (the control goroutine's VQ_PAIRS_SET) with halt
}

// pair is one receive/transmit queue pair and its goroutines.
type pair struct {
	rx      *receiver    // nil when the driver left the receive queue off
	tx      *transmitter // nil when the driver left the transmit queue off
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	serving atomic.Bool // the goroutines run: Notify passes kicks on
}

// start runs the control goroutine and the pairs the driver uses under a
// new child of r.parent.
func (r *run) start() error {
	r.mu.Lock()
	r.ctx, r.cancel = context.WithCancel(r.parent)
	if r.ctrl != nil {
		ctx := r.ctx
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.ctrl.run(ctx)
		}()
	}
	r.mu.Unlock()
	return r.reconcile()
}

// reconcile makes the pairs served, and the backend queues enabled, match
// the pair count the driver set: pairs beyond it are stopped first and
// their backend queues turned off, then queues turned on and pairs
// started. It starts nothing once the run is being stopped.
func (r *run) reconcile() error {
	d := r.d
	r.mu.Lock()
	defer r.mu.Unlock()
	d.mu.Lock()
	n := min(int(d.ctrl.pairs), len(r.pairs))
	d.mu.Unlock()
	for i := n; i < len(r.pairs); i++ {
		r.stopPair(i)
	}
	if err := d.enableQueues(n); err != nil {
		return err
	}
	if r.ctx == nil || r.ctx.Err() != nil {
		return nil
	}
	for i := range n {
		r.startPair(i)
	}
	return nil
}

// startPair runs pair i's goroutines unless they run; r.mu held.
func (r *run) startPair(i int) {
	p := r.pairs[i]
	if p.serving.Load() {
		return
	}
	ctx, cancel := context.WithCancel(r.ctx)
	p.cancel = cancel
	for _, fn := range []func(context.Context){p.rxRun(), p.txRun()} {
		if fn == nil {
			continue
		}
		r.wg.Add(1)
		p.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer p.wg.Done()
			fn(ctx)
		}()
	}
	p.serving.Store(true)
}

func (p *pair) rxRun() func(context.Context) {
	if p.rx == nil {
		return nil
	}
	return p.rx.run
}

func (p *pair) txRun() func(context.Context) {
	if p.tx == nil {
		return nil
	}
	return p.tx.run
}

// stopPair stops pair i's goroutines if they run, waking them from its
// backend queue; r.mu held. The receive goroutine keeps the frame it
// holds for when the pair is served again.
func (r *run) stopPair(i int) {
	p := r.pairs[i]
	if !p.serving.Load() {
		return
	}
	p.serving.Store(false)
	p.cancel()
	if p.tx != nil {
		r.d.kicks.signal(i) // it waits on the eventfd, not in a select
	}
	if p.rx != nil {
		r.d.kicks.signalRx(i)
	}
	q := r.d.queues[i]
	err := q.SetDeadline(time.Now())
	p.wg.Wait()
	if err == nil {
		err = q.SetDeadline(time.Time{})
	}
	if err != nil {
		r.d.glog.Error("virtio-net: stop queue pair", "pair", i, "err", err)
	}
}

// enableQueues lets the host steer frames to the first n backend queues
// only.
func (d *Device) enableQueues(n int) error {
	if d.mq == nil {
		return nil
	}
	d.qmu.Lock()
	defer d.qmu.Unlock()
	for i := 1; i < len(d.queues); i++ {
		on := i < n
		if d.qOn[i] == on {
			continue
		}
		if err := d.mq.SetQueueEnabled(i, on); err != nil {
			return fmt.Errorf("virtio-net: backend queue %d on=%v: %w", i, on, err)
		}
		d.qOn[i] = on
	}
	return nil
}

var (
	_ virtio.Device   = (*Device)(nil)
	_ virtio.Pauser   = (*Device)(nil)
	_ virtio.Stateful = (*Device)(nil)
)

// New checks cfg and returns the device, ready for a transport.
func New(cfg Config) (*Device, error) {
	if cfg.Backend == nil {
		return nil, errors.New("virtio-net: no backend")
	}
	if len(cfg.MAC) != 6 || cfg.MAC[0]&1 != 0 || [6]byte(cfg.MAC) == ([6]byte{}) {
		return nil, fmt.Errorf("virtio-net: MAC %v is not a unicast Ethernet address", cfg.MAC)
	}
	mtu := cfg.MTU
	if mtu == 0 {
		mtu = DefaultMTU
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, fmt.Errorf("virtio-net: MTU %d outside %d..%d", mtu, MinMTU, MaxMTU)
	}
	qs := cfg.QueueSize
	if qs == 0 {
		qs = DefaultQueueSize
	}
	if qs < 2 || qs&(qs-1) != 0 || qs > queue.MaxSize {
		return nil, fmt.Errorf("virtio-net: queue size %d is not a power of two in 2..%d", qs, queue.MaxSize)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Device{be: cfg.Backend, log: log, glog: guestlog.New(log, cfg.now), mac: [6]byte(cfg.MAC), mtu: mtu, queueSize: qs, handler: cfg.Handler}
	d.features = virtio.FVersion1 | virtio.FEventIdx | virtio.FIndirectDesc | FMAC | FStatus | FMTU | FMrgRxbuf |
		FCtrlVQ | FCtrlRx | FCtrlVLAN | FCtrlMACAddr
	if !cfg.NoOffloads && cfg.Backend.VnetHdr() {
		d.features |= offloadFeatures(cfg.Backend.Offloads())
	}
	if d.features&ctrlGuestOffloadBits != 0 {
		d.features |= FCtrlGuestOffloads
	}
	d.queues = []Queue{cfg.Backend}
	if mq, ok := cfg.Backend.(MultiQueue); ok && mq.NumQueues() > 1 {
		n := mq.NumQueues()
		if n > MaxQueuePairs {
			return nil, fmt.Errorf("virtio-net: backend has %d queues; at most %d queue pairs", n, MaxQueuePairs)
		}
		d.queues = make([]Queue, n)
		for i := range n {
			if d.queues[i] = mq.Queue(i); d.queues[i] == nil {
				return nil, fmt.Errorf("virtio-net: backend queue %d of %d is nil", i, n)
			}
		}
		d.mq, d.qOn = mq, make([]bool, n)
		for i := range d.qOn {
			d.qOn[i] = true // a multi-queue backend starts with every queue enabled
		}
		d.features |= FMQ
	}
	d.kicks.fds = make([]*kickfd.FD, len(d.queues))
	d.kicks.polled = make([]*kickfd.Polled, len(d.queues))
	d.kicks.rx = make([]*kickfd.FD, len(d.queues))
	d.ctrl = defaultCtrl(0, d.mac)
	d.common = virtio.NewCommon("virtio-net", d.features, d.NumQueues(), qs)
	copy(d.config[cfgMAC:], d.mac[:])
	binary.LittleEndian.PutUint16(d.config[cfgStatus:], StatusLinkUp)
	binary.LittleEndian.PutUint16(d.config[cfgMaxVirtqueuePairs:], uint16(len(d.queues)))
	binary.LittleEndian.PutUint16(d.config[cfgMTU:], uint16(mtu))
	return d, nil
}

// offloadFeatures returns the feature bits a backend's offloads allow, both
// directions, respecting the spec's dependencies (TSO needs CSUM, ECN needs
// TSO).
func offloadFeatures(o Offload) uint64 {
	if o&OffloadCsum == 0 {
		return 0
	}
	f := uint64(FCsum | FGuestCsum)
	if o&OffloadTSO4 != 0 {
		f |= FHostTSO4 | FGuestTSO4
	}
	if o&OffloadTSO6 != 0 {
		f |= FHostTSO6 | FGuestTSO6
	}
	if o&OffloadTSOECN != 0 && o&(OffloadTSO4|OffloadTSO6) != 0 {
		f |= FHostECN | FGuestECN
	}
	return f
}

// guestOffload is what the guest accepted on receive, as backend offloads.
func guestOffload(features uint64) Offload {
	if features&FGuestCsum == 0 {
		return 0
	}
	o := OffloadCsum
	if features&FGuestTSO4 != 0 {
		o |= OffloadTSO4
	}
	if features&FGuestTSO6 != 0 {
		o |= OffloadTSO6
	}
	if features&FGuestECN != 0 && o&(OffloadTSO4|OffloadTSO6) != 0 {
		o |= OffloadTSOECN
	}
	return o
}

// hostOffload is what the guest may use on transmit, as backend offloads.
func hostOffload(features uint64) Offload {
	if features&FCsum == 0 {
		return 0
	}
	o := OffloadCsum
	if features&FHostTSO4 != 0 {
		o |= OffloadTSO4
	}
	if features&FHostTSO6 != 0 {
		o |= OffloadTSO6
	}
	if features&FHostECN != 0 && o&(OffloadTSO4|OffloadTSO6) != 0 {
		o |= OffloadTSOECN
	}
	return o
}

// Type returns virtio.TypeNet.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeNet }

// Features returns the feature bits offered.
func (d *Device) Features() uint64 { return d.features }

// NumQueues returns 2 × max_virtqueue_pairs + 1: receiveq1, transmitq1,
// ..., receiveqN, transmitqN, controlq (3 with one pair). A driver that
// does not take MQ uses only the first three, the third as controlq.
func (d *Device) NumQueues() int { return 2*len(d.queues) + 1 }

// QueuePairs returns max_virtqueue_pairs, the pairs offered, and the pairs
// the driver set with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET (1 until it does,
// and whenever MQ is not negotiated).
func (d *Device) QueuePairs() (offered, set int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.queues), int(d.ctrl.pairs)
}

// MaxQueueSize returns the largest queue size offered.
func (d *Device) MaxQueueSize() uint16 { return d.queueSize }

// ConfigSize returns the size of struct virtio_net_config exposed.
func (d *Device) ConfigSize() int { return ConfigSize }

// MAC returns the guest's MAC address: the configured one, or the one the
// driver set with VIRTIO_NET_CTRL_MAC_ADDR_SET.
func (d *Device) MAC() stdnet.HardwareAddr {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append(stdnet.HardwareAddr(nil), d.ctrl.mac[:]...)
}

// MTU returns the MTU the device offers.
func (d *Device) MTU() int { return d.mtu }

// Counters returns a snapshot of the device's counters.
func (d *Device) Counters() Counters { return d.counts.snapshot() }

// ReadConfig copies configuration bytes at off into p (zeros past the end).
func (d *Device) ReadConfig(off int, p []byte) {
	d.mu.Lock()
	virtio.CopyConfig(p, d.config[:], off)
	d.mu.Unlock()
}

// WriteConfig ignores writes: with VERSION_1 every field is read-only.
func (d *Device) WriteConfig(off int, p []byte) {}

// Activate tells the backend which receive offloads the guest accepted and
// starts the receive, transmit and control goroutines for the queues the
// driver enabled. virtio.Common checks the activation (VERSION_1 included:
// legacy headers are not supported). The control state starts afresh,
// unless RestoreState brought it.
func (d *Device) Activate(ctx context.Context, a virtio.Activation) error {
	return d.common.Activate(a, func(a virtio.Activation) error {
		d.mu.Lock()
		if !d.ctrlRestored {
			d.ctrl = defaultCtrl(a.Features, d.mac)
			copy(d.config[cfgMAC:], d.mac[:])
		}
		d.ctrlRestored = false
		off := guestOffload(d.ctrl.guestOff & a.Features)
		d.mu.Unlock()
		if d.be.VnetHdr() {
			if err := d.be.SetOffload(off); err != nil {
				return fmt.Errorf("virtio-net: set backend offloads %#x: %w", off, err)
			}
		}
		r := &run{d: d, parent: ctx, ctrlQ: CtrlQueue}
		npairs := 1
		if a.Features&FMQ != 0 {
			if a.Features&FCtrlVQ == 0 {
				return queue.Guestf(queue.BadRequest, "features %#x: VIRTIO_NET_F_MQ without VIRTIO_NET_F_CTRL_VQ", a.Features)
			}
			npairs, r.ctrlQ = len(d.queues), 2*len(d.queues)
		}
		for i := range npairs {
			p := &pair{}
			if q := a.Queues[2*i]; q != nil {
				p.rx = newReceiver(d, q, a, off)
				p.rx.be, p.rx.qidx = d.queues[i], 2*i
			}
			if q := a.Queues[2*i+1]; q != nil {
				p.tx = newTransmitter(d, q, a, p.rx)
				p.tx.be, p.tx.qidx = d.queues[i], 2*i+1
			}
			r.pairs = append(r.pairs, p)
		}
		if q := a.Queues[r.ctrlQ]; q != nil && a.Features&FCtrlVQ != 0 {
			r.ctrl = newController(d, q, a, r)
			r.ctrl.qidx = r.ctrlQ
		}
		if err := d.kicks.hand(r); err != nil {
			return err
		}
		if err := r.start(); err != nil {
			d.halt(r)
			d.kicks.idle()
			return err
		}
		d.active.Store(r)
		return nil
	})
}

// Notify wakes the goroutine of queue q (for a transmit queue: signals its
// kick eventfd). It never blocks and ignores queues that are not running.
// A kick of a pair beyond those the driver set with VQ_PAIRS_SET is counted
// (IdleQueueKicks) and ignored; kicks KVM signals on a transmit eventfd the
// device took are not seen while the pair is idle, so they are not counted
// (the pair drains its queue when it is served again).
func (d *Device) Notify(q int) {
	r := d.active.Load()
	if r == nil || q < 0 {
		return
	}
	var kick chan struct{}
	switch {
	case q == r.ctrlQ:
		if r.ctrl == nil {
			return
		}
		kick = r.ctrl.kick
	case q < 2*len(r.pairs):
		p := r.pairs[q/2]
		if !p.serving.Load() {
			d.counts.inc(cIdleQueueKicks)
			return
		}
		switch {
		case q%2 == 0 && p.rx != nil:
			if p.rx.wake != nil {
				p.rx.wake.Signal()
				return
			}
			kick = p.rx.kick
		case q%2 == 1 && p.tx != nil:
			d.kicks.signal(q / 2)
			return
		default:
			return
		}
	default:
		return
	}
	select {
	case kick <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Reset stops the goroutines (a frame being received is dropped; a frame
// being transmitted is finished or abandoned), forgets the queues and what
// the control queue set (the MAC goes back to the configured one). The
// device can then be activated again.
func (d *Device) Reset() error {
	return d.common.Reset(func() error {
		err := d.stop()
		d.mu.Lock()
		d.ctrl, d.ctrlRestored = defaultCtrl(0, d.mac), false
		copy(d.config[cfgMAC:], d.mac[:])
		d.mu.Unlock()
		return err
	})
}

// stop ends the running activation's goroutines.
func (d *Device) stop() error {
	defer d.kicks.idle() // no transmitter waits on the eventfds any more
	r := d.active.Swap(nil)
	if r == nil {
		return nil
	}
	return d.halt(r)
}

// halt stops r's goroutines: the transmit goroutines finish the chain
// they are on, the receive goroutines keep the frame they hold.
func (d *Device) halt(r *run) error {
	if r.cancel == nil {
		return nil // activated paused: never started
	}
	r.cancel()
	// Wake the transmit goroutines waiting on their eventfds.
	for i, p := range r.pairs {
		if p.tx != nil {
			d.kicks.signal(i)
		}
		if p.rx != nil {
			d.kicks.signalRx(i)
		}
	}
	// Wake goroutines blocked in the backend; they see the context ended.
	// Under r.mu, so that a VQ_PAIRS_SET under way does not clear these
	// deadlines behind us (it starts nothing on an ended context).
	var errs []error
	r.mu.Lock()
	for _, q := range d.queues {
		if err := q.SetDeadline(time.Now()); err != nil {
			errs = append(errs, err)
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	for _, p := range r.pairs {
		p.serving.Store(false)
	}
	if len(errs) > 0 {
		return fmt.Errorf("virtio-net: stop backend I/O: %w", errors.Join(errs...))
	}
	for _, q := range d.queues {
		if err := q.SetDeadline(time.Time{}); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("virtio-net: clear backend deadline: %w", errors.Join(errs...))
	}
	return nil
}

// Pause stops the goroutines: the transmit goroutine completes the chain
// it is on, the receive goroutine stops reading the backend (frames wait
// in the host's queue) and keeps the one frame it read but could not
// place yet for Resume; a receive chain it took and did not fill goes back
// to the avail ring. Afterwards every chain taken is in the used ring.
func (d *Device) Pause() error {
	return d.common.Pause(func() error {
		r := d.active.Load()
		if r == nil {
			return nil
		}
		err := d.halt(r)
		for _, p := range r.pairs {
			if p.rx == nil {
				continue
			}
			if perr := p.rx.pause(); perr != nil && err == nil {
				err = perr
			}
		}
		return err
	})
}

// Resume restarts the goroutines: the receive goroutine first delivers
// the frame it kept, the transmit goroutine first sends what the guest
// queued meanwhile.
func (d *Device) Resume() error {
	return d.common.Resume(func() error {
		if r := d.active.Load(); r != nil {
			return r.start()
		}
		return nil
	})
}

// Close stops the device, closes the backend and the device's own kick
// eventfds (the transport closes those it handed over once Close returns).
func (d *Device) Close() error {
	return d.common.Close(d.stop, func() error {
		d.kicks.release()
		return d.be.Close()
	})
}
