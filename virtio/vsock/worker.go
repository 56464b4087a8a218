package vsock

import (
	"context"
	"errors"
	"log/slog"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

const (
	// rstCap bounds the RSTs owed for packets that have no connection.
	// When it is full the worker takes no more guest packets until the
	// guest posts receive buffers.
	rstCap = 64
	// batch is how many chains the worker completes before it signals the
	// guest in the middle of a long drain.
	batch = 64
)

// worker is one activation's goroutine and everything it owns: the queues,
// the connection table and the reusable chains, so the steady state does
// not allocate.
type worker struct {
	d    *Device
	ctx  context.Context // the activation's: forwarders' dials
	lctx context.Context // the current loop's: Pause ends it
	run  *run
	rxq  *queue.Queue
	txq  *queue.Queue
	evq  *queue.Queue
	irq  virtio.Interrupt
	fail func(error)

	table    map[uint64]*Conn
	nextPort uint32
	rst      [rstCap]uint64 // keys owed an RST, FIFO
	rstHead  int
	rstN     int
	held     *Conn // has something to send; waits for a receive buffer
	eventDue bool  // a TRANSPORT_RESET waits for an event buffer

	txc, rxc, evc        queue.Chain
	hdr                  [HeaderLen]byte
	txUsed, rxUsed, evUs bool // chains returned since the last interrupt check
}

func newWorker(d *Device, ctx context.Context, a virtio.Activation, r *run) *worker {
	return &worker{
		d: d, ctx: ctx, lctx: ctx, run: r,
		rxq: a.Queues[RxQueue], txq: a.Queues[TxQueue], evq: a.Queues[EventQueue],
		irq: a.Interrupt, fail: a.Fail,
		table: map[uint64]*Conn{}, nextPort: ephemeralLo,
	}
}

// loop serves the queues until the activation ends or the guest breaks
// the queue protocol.
func (w *worker) loop() {
	for {
		if err := w.round(); err != nil {
			w.failed(err)
			w.resetAll(ErrReset)
			return
		}
		select {
		case <-w.lctx.Done():
			return
		case <-w.d.kick:
		}
	}
}

func (w *worker) failed(err error) {
	if errors.Is(err, queue.ErrGuest) {
		w.d.counts.inc(cProtocolErrors)
		w.d.glog.Warn("virtio-vsock: guest broke the queue protocol; device stopped", "err", err)
	} else {
		w.d.glog.Error("virtio-vsock: device failed", "err", err)
	}
	if w.fail != nil {
		w.fail(err)
	}
}

// round does everything there is to do, then re-arms notifications,
// going round again when the guest queued more meanwhile.
func (w *worker) round() error {
	for {
		for _, q := range []*queue.Queue{w.txq, w.rxq} {
			if q != nil {
				if err := q.DisableNotifications(); err != nil {
					return err
				}
			}
		}
		w.takeRequests()
		if err := w.drainTx(); err != nil {
			return err
		}
		if err := w.fillRx(); err != nil {
			return err
		}
		if err := w.fillEvent(); err != nil {
			return err
		}
		w.interrupts()
		if w.lctx.Err() != nil {
			return nil
		}
		again := false
		if w.txq != nil && w.rstN < rstCap {
			more, err := w.txq.EnableNotifications()
			if err != nil {
				return err
			}
			again = again || more
		}
		if w.rxq != nil && (w.rstN > 0 || w.held != nil || w.d.hasPending()) {
			more, err := w.rxq.EnableNotifications()
			if err != nil {
				return err
			}
			again = again || more
		}
		if w.evq != nil && w.eventDue {
			more, err := w.evq.EnableNotifications()
			if err != nil {
				return err
			}
			again = again || more
		}
		if !again {
			return nil
		}
	}
}

func (w *worker) interrupts() {
	if w.txUsed {
		w.txUsed = false
		w.interrupt(TxQueue, w.txq)
	}
	if w.rxUsed {
		w.rxUsed = false
		w.interrupt(RxQueue, w.rxq)
	}
	if w.evUs {
		w.evUs = false
		w.interrupt(EventQueue, w.evq)
	}
}

func (w *worker) interrupt(qi int, q *queue.Queue) {
	need, err := q.NeedInterrupt()
	if err != nil {
		w.d.glog.Error("virtio-vsock: interrupt check failed", "queue", qi, "err", err)
		return
	}
	if need {
		if err := w.irq.Signal(qi); err != nil {
			w.d.glog.Error("virtio-vsock: interrupt failed", "queue", qi, "err", err)
		}
	}
}

// takeRequests places new Dials and carries out a TransportReset.
func (w *worker) takeRequests() {
	w.d.pmu.Lock()
	dials := w.d.dials
	w.d.dials = nil
	treset := w.d.wantTReset
	w.d.wantTReset = false
	w.d.pmu.Unlock()
	if treset {
		w.resetAll(ErrReset)
		w.rstN, w.rstHead = 0, 0
		w.eventDue = true
		w.d.counts.inc(cTransportResets)
	}
	for _, c := range dials {
		c.mu.Lock()
		switch {
		case c.localClosed: // abandoned before it was placed
			c.state = stateDone
		case len(w.table) >= w.d.maxConns:
			w.d.counts.inc(cTableFull)
			c.state = stateDone
			finishDialLocked(c, ErrTooManyConns)
		default:
			port, ok := w.allocPort(c.guestPort)
			if !ok {
				w.d.counts.inc(cTableFull)
				c.state = stateDone
				finishDialLocked(c, ErrTooManyConns)
				break
			}
			c.hostPort = port
			c.wantRequest = true
			w.insert(c)
			w.d.schedule(c)
		}
		c.mu.Unlock()
	}
}

// allocPort returns a host port that with guestPort names no connection.
// The table holds at most MaxConns, so MaxConns+1 tries always find one.
func (w *worker) allocPort(guestPort uint32) (uint32, bool) {
	for range w.d.maxConns + 1 {
		p := w.nextPort
		if w.nextPort++; w.nextPort >= ephemeralHi {
			w.nextPort = ephemeralLo
		}
		if w.table[connKey(p, guestPort)] == nil {
			return p, true
		}
	}
	return 0, false
}

func (w *worker) insert(c *Conn) {
	w.table[c.key()] = c
	c.inTable = true
	w.d.counts.inc(cConns)
}

// removeLocked takes c out of the table for good: the host side drains
// what it has and then sees the end (ErrReset unless the end was clean).
func (w *worker) removeLocked(c *Conn) {
	if c.state == stateDone && !c.inTable {
		return
	}
	if c.inTable {
		if w.table[c.key()] == c {
			delete(w.table, c.key())
		}
		c.inTable = false
		w.d.counts.dec(cConns)
	}
	finishDialLocked(c, ErrReset)
	c.endLocked(ErrReset)
	c.state = stateDone
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	if c.fwdPeer != nil {
		c.fwdPeer.Close()
		c.fwdPeer = nil
	}
	close(c.done)
}

// resetLocked ends c abnormally and has it send an RST before it goes.
func (w *worker) resetLocked(c *Conn, err error) {
	finishDialLocked(c, err)
	c.endLocked(err)
	if c.state == stateConnecting && !c.requestSent {
		w.removeLocked(c)
		return
	}
	c.state = stateResetting
	w.d.schedule(c)
}

// resetAll drops every connection without telling the guest (its driver
// is gone, or it was told with TRANSPORT_RESET).
func (w *worker) resetAll(err error) {
	for _, c := range w.table {
		c.mu.Lock()
		finishDialLocked(c, err)
		c.endLocked(err)
		w.removeLocked(c)
		c.mu.Unlock()
	}
	w.held = nil
}

func finishDialLocked(c *Conn, err error) {
	if c.dialDone == nil {
		return
	}
	select {
	case <-c.dialDone:
	default:
		c.dialErr = err
		close(c.dialDone)
	}
}

// pushRST owes the guest an RST for a packet that has no connection.
func (w *worker) pushRST(h *Header) {
	if h.Op == OpRST || w.rstN == rstCap {
		return // never answer an RST; the cap is kept by drainTx
	}
	w.rst[(w.rstHead+w.rstN)%rstCap] = connKey(h.DstPort, h.SrcPort)
	w.rstN++
}

// drainTx handles the guest's packets while an answer to each has room.
func (w *worker) drainTx() error {
	if w.txq == nil {
		return nil
	}
	n := 0
	for w.rstN < rstCap && w.lctx.Err() == nil {
		ok, err := w.txq.Pop(&w.txc)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		if err := w.txPacket(&w.txc); err != nil {
			w.txq.Fail(err)
			return err
		}
		if err := w.txq.Push(&w.txc, 0); err != nil {
			return err
		}
		w.txUsed = true
		if n++; n%batch == 0 {
			w.txUsed = false
			w.interrupt(TxQueue, w.txq)
		}
	}
	return nil
}

// txPacket handles one packet from the guest. It returns a guest error
// only for a chain that breaks the queue protocol.
func (w *worker) txPacket(ch *queue.Chain) error {
	if n := ch.WritableLen(); n > 0 || len(ch.Writable()) > 0 {
		return queue.Guestf(queue.BadRequest, "a transmit chain with %d device-writable bytes", n)
	}
	rl := ch.ReadableLen()
	if rl < HeaderLen {
		return queue.Guestf(queue.BadRequest, "a transmit chain of %d bytes, shorter than the %d-byte header", rl, HeaderLen)
	}
	ch.ReadAt(w.hdr[:], 0) // cannot fail: rl >= HeaderLen
	h, _ := DecodeHeader(w.hdr[:])
	w.d.counts.inc(cTxPackets)
	switch v := Check(&h, w.d.cid, rl-HeaderLen); v {
	case Accept:
	case DropAddress:
		w.d.counts.inc(cDropAddress)
		w.guestFault("virtio-vsock: guest packet with a wrong CID dropped", &h)
		return nil
	default:
		switch v {
		case ResetBadLen:
			w.d.counts.inc(cResetBadLen)
		case ResetType:
			w.d.counts.inc(cResetType)
		default:
			w.d.counts.inc(cResetOp)
		}
		w.guestFault("virtio-vsock: bad guest packet reset", &h)
		w.resetKey(&h)
		return nil
	}
	c := w.table[connKey(h.DstPort, h.SrcPort)]
	if c == nil {
		w.noConn(&h)
		return nil
	}
	c.mu.Lock()
	w.onPacket(c, &h, ch)
	c.mu.Unlock()
	return nil
}

func (w *worker) guestFault(msg string, h *Header) {
	if w.d.glog.Enabled(slog.LevelDebug) {
		w.d.glog.Debug(msg, "hdr", h.String())
	}
}

// resetKey answers a bad packet with RST, resetting its connection if it
// has one.
func (w *worker) resetKey(h *Header) {
	if c := w.table[connKey(h.DstPort, h.SrcPort)]; c != nil {
		c.mu.Lock()
		w.resetLocked(c, ErrReset)
		c.mu.Unlock()
		return
	}
	w.pushRST(h)
}

// noConn handles a packet for no connection: REQUEST opens one, RST is
// ignored, anything else gets RST.
func (w *worker) noConn(h *Header) {
	switch h.Op {
	case OpRequest:
		w.request(h)
	case OpRST:
	default:
		w.d.counts.inc(cResetNoConn)
		w.pushRST(h)
	}
}

// request handles a guest's REQUEST to a host port.
func (w *worker) request(h *Header) {
	l := w.d.listener(h.DstPort)
	if l == nil && w.d.hybrid == nil {
		w.d.counts.inc(cRefused)
		w.pushRST(h)
		return
	}
	if len(w.table) >= w.d.maxConns {
		w.d.counts.inc(cTableFull)
		w.pushRST(h)
		return
	}
	c := w.d.newConn(h.DstPort, h.SrcPort, stateEstablished)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.creditFromLocked(h)
	w.insert(c)
	if l == nil {
		c.state = stateForwarding
		w.run.wg.Add(1)
		go w.forward(c, h.DstPort)
		return
	}
	c.wantResponse = true
	if !l.offer(c) {
		w.d.counts.inc(cRefused)
		w.removeLocked(c)
		w.pushRST(h)
		return
	}
	w.d.counts.inc(cAccepted)
	w.d.schedule(c)
}

// forward asks the Unix socket side for a connection to port, off the
// worker, and hands the outcome back through the pending list.
func (w *worker) forward(c *Conn, port uint32) {
	defer w.run.wg.Done()
	peer, err := w.d.hybrid.dialGuestConnection(w.ctx, port)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateForwarding || w.ctx.Err() != nil {
		if peer != nil {
			peer.Close()
		}
		return
	}
	c.fwdDone, c.fwdPeer, c.fwdErr = true, peer, err
	w.d.schedule(c)
}

// advanceLocked moves c on where a decision made elsewhere is in: a
// forwarder's outcome, a Dial abandoned before its REQUEST went out.
func (w *worker) advanceLocked(c *Conn) {
	switch {
	case c.state == stateForwarding && c.fwdDone:
		if c.fwdErr != nil {
			w.d.counts.inc(cRefused)
			w.resetLocked(c, ErrRefused)
			return
		}
		c.state = stateEstablished
		c.wantResponse = true
		w.d.counts.inc(cAccepted)
		peer := c.fwdPeer
		c.fwdPeer = nil
		w.d.serves.Add(1)
		go func() {
			defer w.d.serves.Done()
			w.d.hybrid.splice(c, peer, peer)
		}()
	case c.state == stateConnecting && c.localClosed && !c.requestSent:
		w.removeLocked(c)
	}
}

// onPacket handles a guest packet for connection c.
func (w *worker) onPacket(c *Conn, h *Header, ch *queue.Chain) {
	switch c.state {
	case stateConnecting:
		switch {
		case h.Op == OpResponse && c.requestSent:
			c.creditFromLocked(h)
			c.state = stateEstablished
			if c.localClosed { // the Dial was abandoned meanwhile
				w.resetLocked(c, ErrReset)
				return
			}
			w.d.counts.inc(cDialed)
			finishDialLocked(c, nil)
		case h.Op == OpRST:
			w.d.counts.inc(cDialRefused)
			finishDialLocked(c, ErrRefused)
			w.removeLocked(c)
			return
		default:
			w.d.counts.inc(cResetProtocol)
			w.resetLocked(c, ErrRefused)
			return
		}
	case stateForwarding:
		if h.Op == OpRST {
			w.removeLocked(c)
			return
		}
		w.d.counts.inc(cResetProtocol)
		w.resetLocked(c, ErrReset)
		return
	case stateResetting:
		if h.Op == OpRST { // the guest closed it too: no RST needed
			w.removeLocked(c)
		}
		return
	case stateEstablished:
		if !w.established(c, h, ch) {
			return
		}
	default:
		return
	}
	if c.wantsLocked() {
		w.d.schedule(c)
	}
}

// established handles a packet on an established connection; false when
// the connection is gone or going.
func (w *worker) established(c *Conn, h *Header, ch *queue.Chain) bool {
	if _, lie := c.creditFromLocked(h); lie {
		w.d.counts.inc(cCreditLies)
	}
	switch h.Op {
	case OpRW:
		n := h.Len
		switch {
		case n == 0:
		case c.peerShut&ShutdownSend != 0:
			w.d.counts.inc(cResetProtocol)
			w.resetLocked(c, ErrReset)
			return false
		case c.localClosed: // nobody reads: keep the guest's credit going
			c.rxCnt += n
			c.fwdCnt += n
			w.d.counts.add(cDiscarded, uint64(n))
		case int(n) > c.in.free():
			w.d.counts.inc(cCreditViolations)
			w.guestFault("virtio-vsock: guest sent past its credit; connection reset", h)
			w.resetLocked(c, ErrReset)
			return false
		default:
			a, b := c.in.space()
			a = a[:min(len(a), int(n))]
			ch.ReadAt(a, HeaderLen) // cannot fail: Check saw n payload bytes
			if rest := int(n) - len(a); rest > 0 {
				ch.ReadAt(b[:rest], HeaderLen+int64(len(a)))
			}
			c.in.commit(int(n))
			c.rxCnt += n
			w.d.counts.add(cTxBytes, uint64(n))
			signal(c.readReady)
		}
	case OpCreditUpdate:
	case OpCreditRequest:
		c.wantCredit = true
	case OpShutdown:
		f := h.Flags & shutdownBoth
		c.peerShut |= f
		if f&ShutdownRcv != 0 {
			c.out.reset()
		}
		c.wakeLocked()
		if c.peerShut == shutdownBoth { // closed on the guest's side: finish with RST
			c.endLocked(nil)
			c.state = stateResetting
			w.d.schedule(c)
			return false
		}
	case OpRST:
		var err error
		if c.peerShut&ShutdownSend == 0 && !c.localClosed {
			err = ErrReset
		}
		c.endLocked(err)
		w.removeLocked(c)
		return false
	default: // REQUEST or RESPONSE on an established connection
		w.d.counts.inc(cResetProtocol)
		w.resetLocked(c, ErrReset)
		return false
	}
	return true
}

// popRx takes the next receive buffer, checking its shape.
func (w *worker) popRx() (bool, error) {
	ok, err := w.rxq.Pop(&w.rxc)
	if err != nil || !ok {
		return false, err
	}
	if len(w.rxc.Readable()) > 0 {
		err = queue.Guestf(queue.BadRequest, "a receive chain with %d device-readable bytes", w.rxc.ReadableLen())
	} else if w.rxc.WritableLen() < HeaderLen {
		err = queue.Guestf(queue.BadRequest, "a receive chain of %d bytes, shorter than the %d-byte header", w.rxc.WritableLen(), HeaderLen)
	}
	if err != nil {
		w.rxq.Fail(err)
		return false, err
	}
	return true, nil
}

// pushRx writes h (and the payload already copied behind it) and returns
// the chain.
func (w *worker) pushRx(h *Header) error {
	h.Encode(w.hdr[:])
	w.rxc.WriteAt(w.hdr[:], 0)
	if err := w.rxq.Push(&w.rxc, HeaderLen+h.Len); err != nil {
		return err
	}
	w.rxUsed = true
	w.d.counts.inc(cRxPackets)
	return nil
}

// fillRx fills the guest's receive buffers: owed RSTs first, then the
// pending connections, one packet each in turn.
func (w *worker) fillRx() error {
	if w.rxq == nil {
		return nil
	}
	n := 0
	for w.lctx.Err() == nil {
		if n > 0 && n%batch == 0 {
			w.rxUsed = false
			w.interrupt(RxQueue, w.rxq)
		}
		if w.rstN > 0 {
			ok, err := w.popRx()
			if !ok {
				return err
			}
			key := w.rst[w.rstHead]
			w.rstHead = (w.rstHead + 1) % rstCap
			w.rstN--
			h := Header{SrcCID: HostCID, DstCID: w.d.cid, SrcPort: uint32(key >> 32), DstPort: uint32(key), Type: TypeStream, Op: OpRST}
			if err := w.pushRx(&h); err != nil {
				return err
			}
			n++
			continue
		}
		c := w.held
		w.held = nil
		if c == nil {
			if c = w.d.popPending(); c == nil {
				return nil
			}
		}
		c.mu.Lock()
		w.advanceLocked(c)
		if c.state == stateDone || !c.wantsLocked() {
			c.mu.Unlock()
			continue
		}
		ok, err := w.popRx()
		if !ok {
			w.held = c
			c.mu.Unlock()
			return err
		}
		err = w.sendLocked(c)
		again := err == nil && c.state != stateDone && c.wantsLocked()
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if again {
			w.d.schedule(c)
		}
		n++
	}
	return nil
}

// sendLocked writes c's next packet into the receive chain just taken.
func (w *worker) sendLocked(c *Conn) error {
	room := min(w.rxc.WritableLen()-HeaderLen, MaxPayload)
	op, n, flags := c.pickLocked(room)
	if op == OpInvalid { // cannot happen: the caller checked wantsLocked
		op = OpCreditUpdate
	}
	h := Header{SrcCID: HostCID, DstCID: c.guestCID, SrcPort: c.hostPort, DstPort: c.guestPort,
		Len: n, Type: TypeStream, Op: op, Flags: flags, BufAlloc: uint32(c.in.size), FwdCnt: c.fwdCnt}
	switch op {
	case OpRW:
		a, b := c.out.peek()
		a = a[:min(len(a), int(n))]
		w.rxc.WriteAt(a, HeaderLen) // cannot fail: room >= n
		if rest := int(n) - len(a); rest > 0 {
			w.rxc.WriteAt(b[:rest], HeaderLen+int64(len(a)))
		}
		c.out.discard(int(n))
		c.txCnt += n
		w.d.counts.add(cRxBytes, uint64(n))
		signal(c.writeReady)
	case OpRequest:
		c.wantRequest = false
		c.requestSent = true
	case OpResponse:
		c.wantResponse = false
	case OpCreditRequest:
		c.creditReqSent = true
	case OpShutdown:
		c.sentShut = flags
	}
	c.fwdSent = c.fwdCnt
	c.wantCredit = false
	if err := w.pushRx(&h); err != nil {
		return err
	}
	if op == OpRST {
		w.removeLocked(c)
	}
	return nil
}

// fillEvent delivers a pending TRANSPORT_RESET.
func (w *worker) fillEvent() error {
	if w.evq == nil || !w.eventDue {
		return nil
	}
	ok, err := w.evq.Pop(&w.evc)
	if err != nil || !ok {
		return err
	}
	if len(w.evc.Readable()) > 0 || w.evc.WritableLen() < eventLen {
		err := queue.Guestf(queue.BadRequest, "an event chain with %d readable and %d writable bytes (want %d writable)", w.evc.ReadableLen(), w.evc.WritableLen(), eventLen)
		w.evq.Fail(err)
		return err
	}
	var ev [eventLen]byte // id EventTransportReset is 0
	w.evc.WriteAt(ev[:], 0)
	if err := w.evq.Push(&w.evc, eventLen); err != nil {
		return err
	}
	w.eventDue = false
	w.evUs = true
	return nil
}
