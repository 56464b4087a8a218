package virtionet

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

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

// receiver fills the guest's receive queue: from the backend on its own
// goroutine (run), and with frame handler replies from the transmit
// goroutine (deliverReply).
type receiver struct {
	d    *Device
	be   Backend
	irq  virtio.Interrupt
	fail func(error)
	kick chan struct{}

	vnet      bool    // backend frames start with a virtio-net header
	guestCsum bool    // the guest accepted partial checksums (GUEST_CSUM)
	guestOff  Offload // offloads the guest accepted on receive
	maxFrame  int     // largest frame without GSO: MTU plus Ethernet header and a VLAN tag

	// buf is the receive goroutine's one pending frame: header, then frame,
	// and a spare byte to see truncation.
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
}

func newReceiver(d *Device, q *queue.Queue, a virtio.Activation) *receiver {
	return &receiver{
		d: d, be: d.be, irq: a.Interrupt, fail: a.Fail,
		kick:      make(chan struct{}, 1),
		vnet:      d.be.VnetHdr(),
		guestCsum: a.Features&FGuestCsum != 0,
		guestOff:  guestOffload(a.Features),
		maxFrame:  d.mtu + frameOverhead,
		buf:       make([]byte, HeaderLen+MaxFrameLen+1),
		q:         q,
		notify:    true, // a fresh ring has no NO_NOTIFY flag and avail_event 0
	}
}

// run reads frames from the backend and delivers them until ctx ends, the
// backend fails, or the guest breaks the protocol.
func (r *receiver) run(ctx context.Context) {
	if pkt := r.kept; pkt != nil {
		r.kept = nil
		if !r.deliverWait(ctx, pkt) {
			return
		}
	}
	batch := 0
	for ctx.Err() == nil {
		n, err := r.readFrame(batch == 0)
		if err != nil {
			if errors.Is(err, ErrWouldBlock) {
				r.signal()
				batch = 0
				continue
			}
			if ctx.Err() != nil {
				return // Reset set a deadline to wake us
			}
			r.d.counts.inc(cRxBackendErrors)
			r.d.glog.Error("virtio-net: backend read failed; receive stopped", "err", err)
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
	need, ok := gsoOffload(h.gsoType)
	if !ok || need&^r.guestOff != 0 {
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
		if !r.guestCsum {
			completeChecksum(frame, h.csumStart, h.csumOffset)
			h.flags &^= HdrFNeedsCsum
		}
	}
	if r.guestCsum {
		h.flags &= HdrFNeedsCsum | HdrFDataValid
	} else {
		h = header{} // without GUEST_CSUM the flags must be 0 (and no GSO got here)
	}
	h.encode(pkt[:HeaderLen], 1) // one chain per frame: num_buffers is 1
	return pkt
}

// deliverWait delivers pkt, waiting for Notify(RxQueue) while the ring is
// empty. It returns false when the receive loop must end.
func (r *receiver) deliverWait(ctx context.Context, pkt []byte) bool {
	for {
		r.mu.Lock()
		st, err := r.deliverLocked(pkt)
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
	st, err := r.deliverLocked(pkt)
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

// deliverLocked writes pkt (header and frame) into the next receive chain.
func (r *receiver) deliverLocked(pkt []byte) (deliverStatus, error) {
	if r.dead {
		return 0, errors.New("virtio-net: receive queue stopped")
	}
	if !r.have {
		for {
			ok, err := r.q.Pop(&r.chain)
			if err != nil {
				return 0, err
			}
			if ok {
				break
			}
			if r.notify {
				return noBuffers, nil
			}
			more, err := r.q.EnableNotifications()
			if err != nil {
				return 0, err
			}
			r.notify = true
			if !more {
				return noBuffers, nil
			}
		}
		if n := r.chain.ReadableLen(); n > 0 || len(r.chain.Readable()) > 0 {
			err := queue.Guestf(queue.BadRequest, "a receive chain with %d device-readable bytes", n)
			r.q.Fail(err)
			return 0, err
		}
		r.have = true
		if r.notify {
			if err := r.q.DisableNotifications(); err != nil {
				return 0, err
			}
			r.notify = false
		}
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
	if err := r.irq.Signal(RxQueue); err != nil {
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
