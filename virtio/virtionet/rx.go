package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/resched"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/kickfd"
	"github.com/corral-vmm/corral/virtio/queue"
)

// rxAlign is the alignment of the frame in the receive buffer (after the
// header): a cache line, for the kernel's rep movsb out of the TAP.
const rxAlign = 64

// rxBatch is how many frames the receive goroutine delivers before it
// signals the guest even though the backend has more queued.
const rxBatch = 64

// deliverStatus is what became of one frame offered to the receive ring.
type deliverStatus int

const (
	delivered deliverStatus = iota // written into a chain and pushed
	dropped                        // the guest's chain is too small; counted
	noBuffers                      // the ring is empty; notifications are on
)

// receiver fills one pair's receive queue: from its backend queue on its
// own goroutine (run), and with frame handler replies from the pair's
// transmit goroutine (deliverReply).
type receiver struct {
	d    *Device
	be   Queue // the pair's backend queue
	qidx int   // the receive queue's index, for interrupts
	irq  virtio.Interrupt
	fail func(error)
	kick chan struct{}

	// On a PollQueue backend (TAP, sockets) the receive loop does its own
	// waiting: ppoll(2) on the backend's descriptor beside wake, an eventfd
	// Notify and the stop paths signal. A frame then wakes the thread that
	// delivers it, with no hop through the runtime's poller. wake is nil
	// for other backends: the loop parks in ReadFrame and on kick.
	wake *kickfd.FD
	pfds [2]unix.PollFd // backend, wake (set with wake): kept here so a poll allocates nothing

	vnet bool // backend frames start with a virtio-net header
	// guestOff holds the Offload the guest takes on receive (OffloadCsum:
	// GUEST_CSUM): what it negotiated, or later set on the control queue.
	guestOff atomic.Uint32
	maxFrame int  // largest frame without GSO: MTU plus Ethernet header and a VLAN tag
	mrg      bool // MRG_RXBUF: a frame may span several receive chains

	// buf is the receive goroutine's one pending frame: header, then frame,
	// and a spare byte to see truncation. The frame starts 64-byte aligned:
	// the kernel's copy out of the TAP (rep movsb) into a frame at offset
	// 12 of a page took 2.3 times QEMU's share of the read
	// (bench/results/2026-12-08-sysmon-retake-kvm-pvm.md).
	buf []byte
	// kept is the frame (in buf) the receive goroutine read but had no
	// buffer for when it was stopped by Pause: the next run delivers it
	// first. Only the receive goroutine and Pause touch it.
	kept []byte

	mu     sync.Mutex // guards the queue and everything below
	q      *queue.Queue
	chain  queue.Chain
	have   bool // chain was popped but not used (too small for the last frame)
	notify bool // driver kicks are enabled: the ring ran empty
	dead   bool // the queue failed or the receive loop stopped

	// With MRG_RXBUF, the frame being placed over several chains: its first
	// chain (whose header gets num_buffers), the used entries of the chains
	// filled so far (published together), the bytes placed and the ring
	// descriptors the chains hold. Only the receive goroutine's frame is
	// left part-placed while it waits for the guest; a reply never is.
	first  queue.Chain
	used   []queue.Used
	placed int
	held   int
}

// newReceiver serves q as the first pair's receive queue (Activate sets be
// and qidx for the others); off is what the guest takes on receive.
func newReceiver(d *Device, q *queue.Queue, a virtio.Activation, off Offload) *receiver {
	r := &receiver{
		d: d, be: d.be, qidx: RxQueue, irq: a.Interrupt, fail: a.Fail,
		kick:     make(chan struct{}, 1),
		vnet:     d.be.VnetHdr(),
		maxFrame: d.mtu + frameOverhead,
		buf:      make([]byte, rxAlign+MaxFrameLen+1)[rxAlign-HeaderLen:],
		q:        q,
		notify:   true, // a fresh ring has no NO_NOTIFY flag and avail_event 0
		mrg:      a.Features&FMrgRxbuf != 0,
		used:     make([]queue.Used, 0, q.Size()), // a frame spans at most every chain
	}
	r.guestOff.Store(uint32(off))
	return r
}

// run reads frames from the backend and delivers them until ctx ends, the
// backend fails, or the guest breaks the protocol.
func (r *receiver) run(ctx context.Context) {
	batch := 0
	if pkt := r.kept; pkt != nil {
		r.kept = nil
		if !r.deliverWait(ctx, pkt) {
			return
		}
		batch = 1 // the next read does not wait before signalling this frame
	}
	polled := r.wake != nil
	var rs resched.Point // checked before each wait and after each batch: a clock read per frame showed in profiles
	for ctx.Err() == nil {
		n, err := r.readFrame(batch == 0 && !polled)
		if errors.Is(err, ErrWouldBlock) {
			// The backend ran dry: the guest hears of what it got, then
			// the loop waits (in the next read, or polling).
			if batch > 0 || !polled {
				r.signal()
				batch = 0
			}
			rs.Check()
			if !polled {
				continue
			}
			if err = r.pollWait(); err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return // Reset set a deadline to wake us
			}
			r.d.counts.inc(cRxBackendErrors)
			r.d.glog.Error("virtio-net: backend read or poll failed; receive stopped", "err", err)
			r.signal()
			r.stop()
			return
		}
		pkt := r.prepare(n)
		if pkt == nil {
			continue
		}
		if !r.deliverWait(ctx, pkt) {
			return
		}
		batch++
		if batch >= rxBatch {
			r.signal()
			batch = 0
			rs.Check()
		}
	}
}

// readFrame reads one backend frame into buf: after the header space when
// the backend has no header of its own.
func (r *receiver) readFrame(wait bool) (int, error) {
	if r.vnet {
		return r.be.ReadFrame(r.buf, wait)
	}
	return r.be.ReadFrame(r.buf[HeaderLen:], wait)
}

// pollWait blocks until the backend has a frame or wake was signalled (a
// kick, or a stop: the caller looks at its context).
func (r *receiver) pollWait() error {
	if err := poll(r.pfds[:]); err != nil {
		return fmt.Errorf("virtio-net: poll backend: %w", err)
	}
	if r.pfds[1].Revents != 0 {
		return r.wake.Wait() // readable: clears it without blocking
	}
	return nil
}

// prepare checks the frame of n bytes read into buf and writes the header
// the guest gets. It returns header and frame, or nil for a frame it
// dropped (and counted).
func (r *receiver) prepare(n int) []byte {
	var pkt []byte
	if r.vnet {
		if n == len(r.buf) {
			r.d.counts.inc(cRxDropOversize) // cut to our buffer: longer than any frame
			return nil
		}
		if n < HeaderLen+EthHeaderLen {
			r.d.counts.inc(cRxDropRunt)
			return nil
		}
		pkt = r.buf[:n]
	} else {
		if n == len(r.buf)-HeaderLen {
			r.d.counts.inc(cRxDropOversize)
			return nil
		}
		if n < EthHeaderLen {
			r.d.counts.inc(cRxDropRunt)
			return nil
		}
		pkt = r.buf[:HeaderLen+n]
		clear(pkt[:HeaderLen])
	}
	frame := pkt[HeaderLen:]
	h := decodeHeader(pkt)
	guestOff := Offload(r.guestOff.Load())
	guestCsum := guestOff&OffloadCsum != 0
	need, ok := gsoOffload(h.gsoType)
	if !ok || need&^guestOff != 0 {
		// TUNSETOFFLOAD told the host what the guest takes; a backend that
		// ignores it gets its frame dropped, not passed on.
		r.d.counts.inc(cRxDropOffload)
		return nil
	}
	limit := r.maxFrame
	if h.gso() != GSONone {
		limit = MaxFrameLen
	}
	if len(frame) > limit {
		r.d.counts.inc(cRxDropOversize)
		return nil
	}
	if h.flags&HdrFNeedsCsum != 0 {
		if !h.csumFits(len(frame)) {
			r.d.counts.inc(cRxDropOffload)
			return nil
		}
		if !guestCsum {
			completeChecksum(frame, h.csumStart, h.csumOffset)
			h.flags &^= HdrFNeedsCsum
		}
	}
	if guestCsum {
		h.flags &= HdrFNeedsCsum | HdrFDataValid
	} else {
		h = header{} // without GUEST_CSUM the flags must be 0 (and no GSO got here)
	}
	h.encode(pkt[:HeaderLen], 1) // num_buffers: set again when the frame spans several chains
	return pkt
}

// deliverWait delivers pkt, waiting for Notify(RxQueue) while the ring is
// empty. It returns false when the receive loop must end.
func (r *receiver) deliverWait(ctx context.Context, pkt []byte) bool {
	for {
		r.mu.Lock()
		st, err := r.deliverLocked(pkt, false)
		if err == nil && st == noBuffers {
			// Let the guest see what it has got, so it refills.
			r.signalLocked()
		}
		r.mu.Unlock()
		if err != nil {
			r.failed(err)
			return false
		}
		if st != noBuffers {
			return true
		}
		if r.wake != nil {
			err := r.wake.Wait()
			if ctx.Err() != nil {
				r.kept = pkt // for the next run, after a Pause
				return false
			}
			if err != nil {
				r.failed(err)
				return false
			}
			continue
		}
		select {
		case <-r.kick:
		case <-ctx.Done():
			r.kept = pkt // for the next run, after a Pause
			return false
		}
	}
}

// pause runs once the receive goroutine has stopped: a chain it took but
// did not fill goes back to the avail ring (so every chain taken is in
// the used ring), and the driver hears of what was delivered.
func (r *receiver) pause() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		return nil
	}
	if r.have {
		if err := r.q.Unpop(); err != nil {
			return fmt.Errorf("virtio-net: pause: %w", err)
		}
		r.have = false
	}
	if err := r.unpopMergedLocked(); err != nil {
		return fmt.Errorf("virtio-net: pause: %w", err)
	}
	r.signalLocked()
	return nil
}

// deliverReply puts a frame handler's reply (header included) into the
// receive ring if there is room now; otherwise it is dropped and counted.
// Called from the transmit goroutine.
func (r *receiver) deliverReply(pkt []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead {
		r.d.counts.inc(cRxDropNotRunning)
		return
	}
	st, err := r.deliverLocked(pkt, true)
	if err != nil {
		r.failedLocked(err)
		return
	}
	switch st {
	case delivered:
		r.d.counts.inc(cHandlerReplies)
		r.signalLocked()
	case noBuffers:
		r.d.counts.inc(cRxDropReplyNoRoom)
	}
}

// popLocked takes the next receive chain into c. It returns false when the
// ring is empty; notifications are then enabled.
func (r *receiver) popLocked(c *queue.Chain) (bool, error) {
	for {
		ok, err := r.q.Pop(c)
		if err != nil {
			return false, err
		}
		if ok {
			break
		}
		if r.notify {
			return false, nil
		}
		more, err := r.q.EnableNotifications()
		if err != nil {
			return false, err
		}
		r.notify = true
		if !more {
			return false, nil
		}
	}
	if n := c.ReadableLen(); n > 0 || len(c.Readable()) > 0 {
		err := queue.Guestf(queue.BadRequest, "a receive chain with %d device-readable bytes", n)
		r.q.Fail(err)
		return false, err
	}
	if r.notify {
		if err := r.q.DisableNotifications(); err != nil {
			return false, err
		}
		r.notify = false
	}
	return true, nil
}

// deliverLocked writes pkt (header and frame) into the next receive chain,
// or chains with MRG_RXBUF. A reply is never left part-placed.
func (r *receiver) deliverLocked(pkt []byte, reply bool) (deliverStatus, error) {
	if r.dead {
		return 0, errors.New("virtio-net: receive queue stopped")
	}
	if r.mrg {
		return r.deliverMergedLocked(pkt, reply)
	}
	if !r.have {
		ok, err := r.popLocked(&r.chain)
		if err != nil {
			return 0, err
		}
		if !ok {
			return noBuffers, nil
		}
		r.have = true
	}
	if uint64(len(pkt)) > uint64(r.chain.WritableLen()) {
		// Keep the chain for a frame that fits; a guest that posts only
		// small buffers loses only the frames too big for them.
		r.d.counts.inc(cRxDropGuestBuffer)
		return dropped, nil
	}
	if _, err := r.chain.WriteAt(pkt, 0); err != nil {
		return 0, err // cannot happen: the length was checked
	}
	if err := r.q.Push(&r.chain, uint32(len(pkt))); err != nil {
		return 0, err
	}
	r.have = false
	r.d.counts.inc(cRxPackets)
	r.d.counts.add(cRxBytes, uint64(len(pkt)-HeaderLen))
	return delivered, nil
}

// deliverMergedLocked spreads pkt over as many receive chains as it needs
// (MRG_RXBUF), writing each as it is taken, and returns them all with one
// used idx update once the frame is placed: the driver reads num_buffers
// and expects that many entries to be there. While the ring is empty the
// chains taken stay with the frame until the guest adds more; when they
// hold every descriptor of the ring the frame can never fit, so it is
// dropped and the chains are given back for the next frame.
func (r *receiver) deliverMergedLocked(pkt []byte, reply bool) (deliverStatus, error) {
	if reply && len(r.used) > 0 {
		return noBuffers, nil // the receive goroutine's frame has the chains the guest gave
	}
	for r.placed < len(pkt) {
		c := &r.chain
		if len(r.used) == 0 {
			c = &r.first
		}
		ok, err := r.popLocked(c)
		if err != nil {
			return 0, err
		}
		if !ok {
			if r.held >= int(r.q.Size()) {
				r.d.counts.inc(cRxDropGuestBuffer)
				return dropped, r.unpopMergedLocked()
			}
			if reply {
				return noBuffers, r.unpopMergedLocked()
			}
			return noBuffers, nil
		}
		r.held += c.RingDescriptors()
		wl := c.WritableLen()
		if wl < HeaderLen {
			// Every buffer must hold at least the header (§5.1.6.3.1). The
			// frame is dropped and its chains go back empty, which Linux
			// counts as short frames and reposts.
			for i := range r.used {
				r.used[i] = r.used[i].Unwritten()
			}
			u, _ := c.Used(0)
			r.used = append(r.used, u)
			err := r.q.PushUsed(r.used)
			r.resetMerged()
			r.d.counts.inc(cRxDropGuestBuffer)
			return dropped, err
		}
		n := min(int(wl), len(pkt)-r.placed)
		if _, err := c.WriteAt(pkt[r.placed:r.placed+n], 0); err != nil {
			return 0, err // cannot happen: n is at most the chain's writable length
		}
		u, err := c.Used(uint32(n))
		if err != nil {
			return 0, err
		}
		r.used = append(r.used, u)
		r.placed += n
	}
	var nb [2]byte
	binary.LittleEndian.PutUint16(nb[:], uint16(len(r.used))) // at most the queue size, 32768
	if _, err := r.first.WriteAt(nb[:], hdrNumBuffers); err != nil {
		return 0, err // cannot happen: the first chain holds the header
	}
	if err := r.q.PushUsed(r.used); err != nil {
		return 0, err
	}
	r.resetMerged()
	r.d.counts.inc(cRxPackets)
	r.d.counts.add(cRxBytes, uint64(len(pkt)-HeaderLen))
	return delivered, nil
}

// unpopMergedLocked gives back the chains a part-placed frame holds: the
// next Pop takes them again.
func (r *receiver) unpopMergedLocked() error {
	for range r.used {
		if err := r.q.Unpop(); err != nil {
			return err
		}
	}
	r.resetMerged()
	return nil
}

func (r *receiver) resetMerged() {
	r.used = r.used[:0]
	r.placed, r.held = 0, 0
}

// signal raises the receive interrupt if the driver wants one for what was
// pushed since the last call.
func (r *receiver) signal() {
	r.mu.Lock()
	r.signalLocked()
	r.mu.Unlock()
}

func (r *receiver) signalLocked() {
	if r.dead {
		return
	}
	need, err := r.q.NeedInterrupt()
	if err != nil {
		r.d.glog.Error("virtio-net: receive interrupt check failed", "err", err)
		return
	}
	if !need {
		return
	}
	if err := r.irq.Signal(r.qidx); err != nil {
		r.d.glog.Error("virtio-net: receive interrupt failed", "err", err)
	}
}

func (r *receiver) stop() {
	r.mu.Lock()
	r.dead = true
	r.mu.Unlock()
}

func (r *receiver) failed(err error) {
	r.mu.Lock()
	r.failedLocked(err)
	r.mu.Unlock()
}

// failedLocked stops the receive queue after a guest or host error and
// reports it once.
func (r *receiver) failedLocked(err error) {
	if r.dead {
		return
	}
	r.dead = true
	if errors.Is(err, queue.ErrGuest) {
		r.d.counts.inc(cProtocolErrors)
		r.d.glog.Warn("virtio-net: guest broke the receive queue protocol; queue stopped", "err", err)
	} else {
		r.d.glog.Error("virtio-net: receive queue failed", "err", err)
	}
	if r.fail != nil {
		r.fail(err)
	}
}
