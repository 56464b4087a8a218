package virtionet

import (
	"context"
	"errors"
	"log/slog"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/kickfd"
	"github.com/corral-vmm/corral/virtio/queue"
)

// txBatch is how many chains the transmit goroutine completes before it
// publishes them (one used idx store) and signals the guest in the middle
// of a long drain.
const txBatch = 64

// errStopped ends a drain when Reset interrupted a backend write.
var errStopped = errors.New("virtio-net: stopped")

// transmitter serves one pair's transmit queue. Everything it reuses per
// frame lives here, so the steady state does not allocate.
type transmitter struct {
	d       *Device
	be      Queue // the pair's backend queue
	qidx    int   // the transmit queue's index, for interrupts
	q       *queue.Queue
	irq     virtio.Interrupt
	fail    func(error)
	kick    *kickfd.Polled // what run sleeps on between drains (set by Activate)
	rx      *receiver      // the pair's, for frame handler replies; nil when its receive queue is off
	handler FrameHandler

	vnet     bool    // the backend takes a virtio-net header in front of each frame
	hostOff  Offload // offloads the guest may use on transmit
	maxFrame int     // largest frame without GSO

	chain queue.Chain
	used  [txBatch]queue.Used // the batch's completions, published at once
	nused int
	buf   []byte // one chain's header and frame, copied out of guest memory
	out   []byte // header space, then the handler's reply
}

// newTransmitter serves q as the first pair's transmit queue (Activate sets
// be and qidx for the others); rx takes the frame handler's replies.
func newTransmitter(d *Device, q *queue.Queue, a virtio.Activation, rx *receiver) *transmitter {
	t := &transmitter{
		d: d, be: d.be, qidx: TxQueue, q: q, irq: a.Interrupt, fail: a.Fail, rx: rx, handler: d.handler,
		vnet:     d.be.VnetHdr(),
		hostOff:  hostOffload(a.Features),
		maxFrame: d.mtu + frameOverhead,
		buf:      make([]byte, HeaderLen+MaxFrameLen),
	}
	if !t.vnet {
		t.hostOff = 0 // not offered; a guest that sets NEEDS_CSUM anyway gets it done in software
	}
	if t.handler != nil {
		t.out = make([]byte, HeaderLen+t.handler.ReplyBufferSize())
	}
	return t
}

// run drains the queue at start (the driver may have queued frames before
// DRIVER_OK, while the device was paused or while the pair was idle) and
// after every kick, until ctx ends or the guest breaks the protocol. It
// parks on the kick eventfd in the runtime's poller, so a guest kick wakes
// this goroutine and the frames are sent where it wakes; whoever ends ctx
// signals the eventfd.
func (t *transmitter) run(ctx context.Context) {
	for {
		if err := t.drain(ctx); err != nil {
			t.failed(err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if err := t.kick.Wait(); err != nil {
			t.failed(err)
			return
		}
	}
}

func (t *transmitter) failed(err error) {
	if errors.Is(err, queue.ErrGuest) {
		t.d.counts.inc(cProtocolErrors)
		t.d.glog.Warn("virtio-net: guest broke the transmit queue protocol; queue stopped", "err", err)
	} else {
		t.d.glog.Error("virtio-net: transmit queue failed", "err", err)
	}
	if t.fail != nil {
		t.fail(err)
	}
}

// drain sends every available frame, signals the driver, and re-arms
// notifications, looping when frames arrived meanwhile. Completions are
// published in batches of up to txBatch with one used idx store, each
// followed by one interrupt decision; every path out publishes what was
// sent, so nothing taken stays in flight.
func (t *transmitter) drain(ctx context.Context) error {
	for {
		if err := t.q.DisableNotifications(); err != nil {
			return err
		}
		for ctx.Err() == nil {
			ok, err := t.q.Pop(&t.chain)
			if err != nil {
				return errors.Join(err, t.publish())
			}
			if !ok {
				break
			}
			if err := t.send(ctx, &t.chain); err != nil {
				if err == errStopped {
					// Return the chain even so (the frame is lost, as a
					// NIC drops one): a Pause leaves nothing in flight.
					t.d.counts.inc(cTxDropBackend)
					if err := t.complete(); err != nil {
						return err
					}
					return t.flush()
				}
				perr := t.publish()
				t.q.Fail(err)
				return errors.Join(err, perr)
			}
			if err := t.complete(); err != nil {
				return err
			}
			if t.nused == txBatch {
				if err := t.flush(); err != nil {
					return err
				}
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		more, err := t.q.EnableNotifications()
		if err != nil || !more {
			return err
		}
	}
}

// complete adds t.chain, sent (or dropped), to the batch to publish.
func (t *transmitter) complete() error {
	u, err := t.chain.Used(0)
	if err != nil {
		return err // cannot happen: 0 bytes written
	}
	t.used[t.nused] = u
	t.nused++
	return nil
}

// publish returns the batch's chains to the driver with one used idx store.
func (t *transmitter) publish() error {
	n := t.nused
	t.nused = 0
	return t.q.PushUsed(t.used[:n])
}

// flush publishes the batch and signals the driver if it wants to know.
func (t *transmitter) flush() error {
	if err := t.publish(); err != nil {
		return err
	}
	t.interrupt()
	return nil
}

func (t *transmitter) interrupt() {
	need, err := t.q.NeedInterrupt()
	if err != nil {
		t.d.glog.Error("virtio-net: transmit interrupt check failed", "err", err)
		return
	}
	if !need {
		return
	}
	if err := t.irq.Signal(t.qidx); err != nil {
		t.d.glog.Error("virtio-net: transmit interrupt failed", "err", err)
	}
}

// send handles one transmit chain. It returns a guest error for a chain
// that breaks the protocol, errStopped when Reset interrupted the backend,
// and nil otherwise (the frame was sent, consumed by the handler, or
// dropped and counted).
func (t *transmitter) send(ctx context.Context, c *queue.Chain) error {
	if n := c.WritableLen(); n > 0 || len(c.Writable()) > 0 {
		return queue.Guestf(queue.BadRequest, "a transmit chain with %d device-writable bytes", n)
	}
	rl := c.ReadableLen()
	if rl < HeaderLen {
		return queue.Guestf(queue.BadRequest, "a transmit chain of %d bytes, shorter than the %d-byte virtio-net header", rl, HeaderLen)
	}
	if uint64(rl) > HeaderLen+MaxFrameLen {
		return queue.Guestf(queue.BadRequest, "a transmit chain of %d bytes (at most %d: a 64 KiB frame and the header)", rl, HeaderLen+MaxFrameLen)
	}
	// One copy out of guest memory: everything below reads the copy.
	pkt := t.buf[:rl]
	if _, err := c.ReadAt(pkt, 0); err != nil {
		return err // cannot happen: rl bytes are readable
	}
	frame := pkt[HeaderLen:]
	if len(frame) < EthHeaderLen {
		t.d.counts.inc(cTxDropRunt)
		return nil
	}
	h := decodeHeader(pkt)
	need, ok := gsoOffload(h.gsoType)
	if !ok || need&^t.hostOff != 0 {
		t.d.counts.inc(cTxDropBadHeader)
		return nil
	}
	gso := h.gso() != GSONone
	if gso && h.gsoSize == 0 {
		t.d.counts.inc(cTxDropBadHeader)
		return nil
	}
	if !gso && len(frame) > t.maxFrame {
		t.d.counts.inc(cTxDropOversize)
		return nil
	}
	// DATA_VALID and the rest are receive-side flags: the guest cannot tell
	// the host its checksums were verified.
	h.flags &= HdrFNeedsCsum
	if h.flags&HdrFNeedsCsum != 0 {
		if !h.csumFits(len(frame)) {
			t.d.counts.inc(cTxDropBadHeader)
			return nil
		}
		if t.hostOff&OffloadCsum == 0 {
			t.finishChecksum(&h, frame)
		}
	} else {
		h.csumStart, h.csumOffset = 0, 0
	}
	if t.handler != nil && !gso && t.handler.Match(frame) {
		if h.flags&HdrFNeedsCsum != 0 {
			t.finishChecksum(&h, frame)
		}
		// Every pair's transmit goroutine may call the handler: one at a
		// time, and its reply is placed before the next call reuses it.
		t.d.handlerMu.Lock()
		reply, consumed := t.handler.Handle(frame, t.out[HeaderLen:])
		if len(reply) > 0 {
			t.deliverReply(reply)
		}
		t.d.handlerMu.Unlock()
		if consumed {
			t.d.counts.inc(cHandlerConsumed)
			return nil
		}
	}
	var err error
	if t.vnet {
		h.encode(pkt[:HeaderLen], 0)
		err = t.be.WriteFrame(pkt)
	} else {
		err = t.be.WriteFrame(frame)
	}
	if err != nil {
		if ctx.Err() != nil {
			return errStopped
		}
		t.d.counts.inc(cTxDropBackend)
		if t.d.glog.Enabled(slog.LevelDebug) { // counted; the record is only for debugging
			t.d.glog.Debug("virtio-net: backend write failed", "len", len(frame), "err", err)
		}
		return nil
	}
	t.d.counts.inc(cTxPackets)
	t.d.counts.add(cTxBytes, uint64(len(frame)))
	return nil
}

// finishChecksum completes a partial checksum in software and clears the
// header's request for it.
func (t *transmitter) finishChecksum(h *header, frame []byte) {
	completeChecksum(frame, h.csumStart, h.csumOffset)
	h.flags &^= HdrFNeedsCsum
	h.csumStart, h.csumOffset = 0, 0
	t.d.counts.inc(cTxCsumCompleted)
}

// deliverReply hands a frame handler's reply to the receive side with a
// zero virtio-net header in front.
func (t *transmitter) deliverReply(reply []byte) {
	if t.rx == nil {
		t.d.counts.inc(cRxDropNotRunning)
		return
	}
	if len(reply) < EthHeaderLen || len(reply) > t.maxFrame {
		t.d.counts.inc(cRxDropOversize)
		return
	}
	var pkt []byte
	switch {
	case len(t.out) > HeaderLen && &reply[0] == &t.out[HeaderLen]:
		pkt = t.out[:HeaderLen+len(reply)] // built in place
	case HeaderLen+len(reply) <= len(t.out):
		pkt = t.out[:HeaderLen+copy(t.out[HeaderLen:], reply)]
	default: // the handler allocated its reply
		pkt = append(make([]byte, HeaderLen, HeaderLen+len(reply)), reply...)
	}
	header{}.encode(pkt[:HeaderLen], 1)
	t.rx.deliverReply(pkt)
}
