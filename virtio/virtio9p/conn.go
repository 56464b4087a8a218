package virtio9p

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// conn is one activation: the queue, the request slots, and the byte
// streams the p9 server reads T-messages from (Read) and writes R-messages
// to (Write). The server reads one message at a time and writes each reply
// in one run of Writes, so both streams frame on the 9P size field.
type conn struct {
	d    *Device
	q    *queue.Queue
	irq  virtio.Interrupt
	fail func(error)
	kick chan struct{} // a notification or a freed slot: look at the queue
	done chan struct{} // closed by stop once closed is set

	// Interrupts are signalled by irqLoop, not by the goroutine that
	// pushed the reply: that one is inside the p9 server's send lock, and
	// an irqfd write can last as long as the vCPU it wakes runs before
	// the writer gets the CPU back (1 ms on average on a 1-CPU host,
	// bench/results/2026-12-06-9p-direct-read.md), holding back every
	// other reply. complete sets irqWant and kicks irqKick; flushIRQ,
	// under irqMu, signals once for all the pushes before it.
	irqKick chan struct{}
	irqMu   sync.Mutex
	irqWant atomic.Bool

	ctxDone <-chan struct{} // the activation's context: take no more chains

	// direct is the tree's staging of Tread data into guest memory, or
	// nil (see DirectReader).
	direct DirectReader

	cancel context.CancelFunc
	wg     sync.WaitGroup // the server

	qmu     sync.Mutex // guards q: next pops, repliers push
	stopped bool       // under qmu: no more pushes

	mu     sync.Mutex
	slots  []slot
	free   []uint16 // free slot indices (a stack)
	cur    int      // slot the server is reading (-1: none)
	curOff uint32
	closed bool
	halted bool // the context ended or the queue failed: take no more chains
	// opening counts Tlopens the server has and has not answered: no
	// other message goes to the server meanwhile. The p9 server marks a
	// fid open without a lock after Open returns, racing with a Tread
	// of that fid the guest sends before the Rlopen (the race detector
	// saw it; the Linux client never does that).
	opening int
	// msize is the server's message size limit: the last Rversion's
	// nonzero msize (an Rversion "unknown", msize 0, leaves the server's
	// limit as it was), 0 before. versioned is whether the last Rversion
	// succeeded: until one does, only Tversion is served.
	msize     uint32
	versioned bool
	// versions counts Tversions handed to the server and not yet
	// answered, versionMin the least msize among them: the server may
	// already limit messages to it, so the transport does too.
	versions   int
	versionMin uint32
	idle       int // server goroutines waiting in read for a notification
	// paused: Pause was called; take pops nothing until resume. freed
	// is broadcast (under mu) when a slot is freed, for pause's wait.
	paused bool
	freed  *sync.Cond
	// fids mirrors the server's fid table (see trackFid): what the guest
	// holds, which a snapshot cannot carry. attached: a Tattach
	// succeeded since the last successful Tversion.
	fids     map[uint32]struct{}
	attached bool
	// served counts T-messages the server has read whose reply has not
	// ended: a reply that is dropped (too large, NOTAG) leaves its slot
	// in use but still ends here.
	served int
	// taken: a chain has been accepted since start. Until then the
	// server has received nothing and started no goroutine, so stop has
	// nothing to settle (a share slot the guest never mounts: a warm
	// exec's machine has four).
	taken bool

	// Reply stream state, touched only by Write (the server serialises
	// its sends; wmu makes that explicit).
	wmu   sync.Mutex
	whdr  [hdrLen + 4]byte // header and, for Rversion, msize
	whave uint32
	wslot int // -1: the reply is being dropped
	wsize uint32
	wtyp  byte
	// wlen is what the guest gets: wsize, or for an Rread whose data a
	// staged read put in the chain already, the header, count and data.
	// wdirect: that is so, and the server's own count (0) is not copied.
	wlen    uint32
	wdirect bool
	// wdrop is the slot of a reply being dropped (too large for its
	// chain), freed without a push when the reply ends (-1: none).
	wdrop int
}

// slot is one request in flight.
type slot struct {
	chain    queue.Chain
	head     [headMax]byte // the T-message's first bytes, rewritten
	headLen  uint32
	size     uint32 // T-message size
	guestTag uint16
	state    slotState
	version  bool // a Tversion counted in conn.versions
	open     bool // a Tlopen counted in conn.opening
	// fidOp is what the request's reply does to the guest's fids
	// (conn.fids): fid is added on success, or removed whatever the reply.
	fidOp fidOp
	fid   uint32
	typ   byte
	// key names the Tread's staged read (0: none); segs and dst are its
	// data buffers, kept for the next request.
	key  uint64
	segs []queue.Buffer
	dst  [][]byte
}

type slotState uint8

const (
	slotFree  slotState = iota
	slotReady           // being read by the server
	slotRead            // read by the server, reply pending
)

func newConn(d *Device, a virtio.Activation) *conn {
	c := &conn{
		d: d, q: a.Queues[0], irq: a.Interrupt, fail: a.Fail,
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		irqKick: make(chan struct{}, 1),
		direct:  d.direct,
		slots:   make([]slot, d.maxInFlight),
		cur:     -1, wslot: -1, wdrop: -1,
		fids: make(map[uint32]struct{}),
	}
	c.freed = sync.NewCond(&c.mu)
	for i := d.maxInFlight - 1; i >= 0; i-- {
		c.free = append(c.free, uint16(i))
	}
	return c
}

// start runs the p9 server on the connection. There is no worker
// goroutine: the server goroutine waiting for a message takes the chain
// from the queue itself (see next), and handles it on the same goroutine,
// so a request crosses no goroutine between the notification and the
// reply.
func (c *conn) start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	srv := p9.NewServer(c.d.fs)
	c.ctxDone = ctx.Done()
	c.wg.Add(2)
	go c.irqLoop()
	go func() {
		defer c.wg.Done()
		srv.Handle(serverEnd{c}, serverEnd{c})
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if !closed {
			c.failed(errors.New("virtio-9p: the 9P server ended the connection"))
		}
	}()
}

// stop ends the server and waits for it: requests in flight finish, their
// replies are dropped, the server closes every fid.
func (c *conn) stop() {
	c.cancel()
	c.settle()
	c.qmu.Lock()
	c.stopped = true
	c.qmu.Unlock()
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	close(c.done)
	c.wg.Wait()
	for i := range c.slots {
		c.finishRead(&c.slots[i]) // replies that never came
	}
}

// settle waits (briefly) until the server has no request in hand and a
// goroutine waits for the next one. The p9 server starts a receiving
// goroutine after each message when none is idle, and that goroutine's
// WaitGroup.Add races with Handle's final Wait if the connection ends
// before it runs (a race in the library, harmless but reported by -race).
// It reports whether it had to wait: not when no chain was ever taken.
func (c *conn) settle() bool {
	c.mu.Lock()
	taken := c.taken
	c.mu.Unlock()
	if !taken {
		return false
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	for calm := 0; calm < 2 && time.Now().Before(deadline); {
		if c.quiet() {
			calm++ // twice, a millisecond apart: a just-started goroutine has run
		} else {
			calm = 0
		}
		time.Sleep(time.Millisecond)
	}
	return true
}

// quiet reports whether the server holds no request: none being read,
// every one read answered, and a goroutine waiting in read for the next.
func (c *conn) quiet() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.idle > 0 && c.cur < 0 && c.served == 0
}

// irqLoop signals the interrupts complete asks for until stop.
func (c *conn) irqLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.irqKick:
			c.flushIRQ()
		case <-c.done:
			return
		}
	}
}

// flushIRQ signals the queue's interrupt if a push asked for one and no
// signal has followed it yet. When it returns, every such push has been
// signalled (pause relies on it).
func (c *conn) flushIRQ() {
	c.irqMu.Lock()
	defer c.irqMu.Unlock()
	if c.irqWant.Swap(false) {
		if err := c.irq.Signal(0); err != nil {
			c.d.log.Error("virtio-9p: interrupt failed", "err", err)
		}
	}
}

func (c *conn) wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// next makes sure the server has a T-message to read, taking chains from
// the queue (and answering those the transport answers itself) until one
// is for the server. With the queue empty or every slot in use it waits
// for a notification or a freed slot. It returns io.EOF once the
// connection is closed. The server reads one message at a time, so only
// one goroutine is in next.
func (c *conn) next() error {
	for {
		c.mu.Lock()
		closed, cur, halted, opening := c.closed, c.cur, c.halted, c.opening
		c.mu.Unlock()
		switch {
		case closed:
			return io.EOF
		case cur >= 0:
			return nil
		}
		if !halted && opening == 0 {
			took, err := c.take()
			if err != nil {
				c.mu.Lock()
				c.halted = true
				c.mu.Unlock()
				c.failed(err)
				continue
			}
			if took {
				continue
			}
		}
		ended := c.ctxDone
		if halted {
			ended = nil
		}
		c.mu.Lock()
		c.idle++
		c.mu.Unlock()
		select {
		case <-c.kick:
		case <-c.done:
		case <-ended:
			halted = true
		}
		c.mu.Lock()
		c.idle--
		c.halted = c.halted || halted
		c.mu.Unlock()
	}
}

func (c *conn) failed(err error) {
	c.qmu.Lock()
	c.q.Fail(err)
	c.qmu.Unlock()
	if errors.Is(err, queue.ErrGuest) {
		c.d.counts.inc(cProtocolErrors)
		c.d.log.Warn("virtio-9p: guest broke the 9P transport; device stopped", "err", err)
	} else {
		c.d.log.Error("virtio-9p: device failed", "err", err)
	}
	if c.fail != nil {
		c.fail(err)
	}
}

// take pops one chain into a free slot and accepts it; false when there
// is no chain or no free slot, or the connection is paused. With no slot
// free it leaves notifications off: a reply frees one and wakes next.
func (c *conn) take() (bool, error) {
	c.mu.Lock()
	if len(c.free) == 0 || c.paused {
		c.mu.Unlock()
		return false, nil
	}
	i := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.mu.Unlock()
	s := &c.slots[i]

	c.qmu.Lock()
	if err := c.q.DisableNotifications(); err != nil {
		c.qmu.Unlock()
		c.release(i)
		return false, err
	}
	ok, err := c.q.Pop(&s.chain)
	if err == nil && !ok {
		var more bool
		more, err = c.q.EnableNotifications()
		if err == nil && more {
			ok, err = c.q.Pop(&s.chain)
		}
	}
	c.qmu.Unlock()
	if err != nil || !ok {
		c.release(i)
		return false, err
	}
	return true, c.accept(i)
}

// release returns slot i to the free list.
func (c *conn) release(i uint16) {
	c.mu.Lock()
	c.slots[i].state = slotFree
	c.free = append(c.free, i)
	c.freed.Broadcast()
	c.mu.Unlock()
}

// accept checks the chain in slot i and hands its T-message to the
// server, or answers it with an Rlerror, or fails the device.
func (c *conn) accept(i uint16) error {
	s := &c.slots[i]
	rlen, wlen := s.chain.ReadableLen(), s.chain.WritableLen()
	if rlen < hdrLen {
		return queue.Guestf(queue.BadRequest, "a 9P request with %d readable bytes (want a 7-byte header)", rlen)
	}
	if wlen < rlerrorLen {
		return queue.Guestf(queue.BadRequest, "a 9P request with %d writable bytes (want at least %d)", wlen, rlerrorLen)
	}
	n := min(rlen, headMax)
	if _, err := s.chain.ReadAt(s.head[:n], 0); err != nil {
		return err // cannot happen: n <= rlen
	}
	le := binary.LittleEndian
	size := le.Uint32(s.head[hdrSize:])
	typ := s.head[hdrType]
	s.guestTag = le.Uint16(s.head[hdrTag:])
	s.size, s.headLen = size, min(n, size)

	c.mu.Lock()
	c.taken = true
	limit, versioned := c.msize, c.versioned
	if limit == 0 {
		limit = c.d.maxMsize
	}
	if c.versions > 0 {
		limit = min(limit, c.versionMin)
	}
	c.mu.Unlock()
	switch {
	case size < hdrLen || size > rlen:
		return c.refuse(i, errEBADMSG)
	case size > limit:
		return c.refuse(i, errEMSGSIZE)
	case typ != tTversion && !versioned:
		return c.refuse(i, errEPROTO)
	case c.d.noXattrs && (typ == tTxattrwalk || typ == tTxattrcreate):
		// The p9 server would turn the tree's EOPNOTSUPP into EINVAL,
		// which Linux takes for a failure: overlayfs then fails the
		// lookup of every regular file of a lower layer on 9p (exec
		// from corral exec's root gave EINVAL). ENODATA and EOPNOTSUPP
		// are what it takes for "no such attribute".
		return c.answer(i, errEOPNOTSUPP)
	}

	le.PutUint16(s.head[hdrTag:], i)
	s.version = false
	var vm uint32
	switch typ {
	case tTversion:
		if size >= versionMSize+4 {
			vm = min(le.Uint32(s.head[versionMSize:]), c.d.maxMsize)
			le.PutUint32(s.head[versionMSize:], vm)
			s.version = vm != 0 // msize 0 is answered "unknown": no change
		}
	case tTread, tTreaddir:
		if size >= countOff+4 {
			// The reply must fit msize and the writable part (the
			// Rread and Rreaddir header is as long as Rlerror).
			count := min(le.Uint32(s.head[countOff:]), limit-rlerrorLen, wlen-rlerrorLen)
			le.PutUint32(s.head[countOff:], count)
			if typ == tTread && c.direct != nil {
				c.stageRead(s, count)
			}
		}
	}

	c.mu.Lock()
	if typ == tTflush && size >= flushOldTag+2 {
		old := le.Uint16(s.head[flushOldTag:])
		mapped := uint16(unusedTag)
		for j := range c.slots {
			if uint16(j) != i && c.slots[j].state != slotFree && c.slots[j].guestTag == old {
				mapped = uint16(j)
				break
			}
		}
		le.PutUint16(s.head[flushOldTag:], mapped)
	}
	s.typ = typ
	s.fidOp, s.fid = fidOpOf(typ, s.head[:s.headLen])
	s.open = typ == tTlopen
	if s.open {
		c.opening++
	}
	if s.version {
		if c.versions == 0 || vm < c.versionMin {
			c.versionMin = vm
		}
		c.versions++
	}
	s.state = slotReady
	c.cur, c.curOff = int(i), 0
	c.mu.Unlock()
	c.d.counts.inc(cRequests)
	c.d.counts.add(cRequestBytes, uint64(size))
	return nil
}

// stageRead has the tree read a Tread's data straight into the chain,
// after the reply's header and count: the server sees a key in place of
// the offset (every Tread's, so the guest never gives one) and File.ReadAt
// with it fills the staged buffers.
func (c *conn) stageRead(s *slot, count uint32) {
	s.segs = queue.AppendRange(s.segs[:0], s.chain.Writable(), rlerrorLen, uint64(count))
	s.dst = s.dst[:0]
	for _, b := range s.segs {
		s.dst = append(s.dst, b.Data)
	}
	off := binary.LittleEndian.Uint64(s.head[readOffset:])
	s.key = c.direct.StageRead(s.dst, off)
	binary.LittleEndian.PutUint64(s.head[readOffset:], s.key)
}

// finishRead ends slot s's staged read, if any: how many bytes it put in
// the chain, and whether it ran.
func (c *conn) finishRead(s *slot) (n uint32, ran bool) {
	if s.key == 0 {
		return 0, false
	}
	k, ran := c.direct.FinishRead(s.key)
	s.key = 0
	clear(s.segs) // drop references to guest memory
	clear(s.dst)
	return uint32(k), ran
}

// refuse answers the request in slot i with Rlerror(errno) without the
// server: its framing cannot be trusted, or it comes too early.
func (c *conn) refuse(i uint16, errno uint32) error {
	s := &c.slots[i]
	c.d.counts.inc(cGuestErrors)
	c.d.log.Warn("virtio-9p: guest gave a 9P request the transport refused", "errno", errno, "size", s.size)
	return c.answer(i, errno)
}

// answer completes the request in slot i with Rlerror(errno) without the
// server.
func (c *conn) answer(i uint16, errno uint32) error {
	s := &c.slots[i]
	r := rlerror(s.guestTag, errno)
	if _, err := s.chain.WriteAt(r[:], 0); err != nil {
		return err // cannot happen: the writable part was checked
	}
	c.complete(i, rlerrorLen)
	return nil
}

// complete returns slot i's chain to the driver with n bytes written and
// frees the slot.
func (c *conn) complete(i uint16, n uint32) {
	c.qmu.Lock()
	var need bool
	var err error
	if !c.stopped && c.q.Err() == nil {
		if err = c.q.Push(&c.slots[i].chain, n); err == nil {
			need, err = c.q.NeedInterrupt()
		}
	}
	c.qmu.Unlock()
	c.d.counts.add(cReplyBytes, uint64(n))
	if err != nil {
		c.d.log.Error("virtio-9p: completing a request failed", "err", err)
	}
	if need {
		c.irqWant.Store(true)
		select {
		case c.irqKick <- struct{}{}:
		default: // a kick is pending: irqLoop will see irqWant
		}
	}
	c.release(i)
	c.wake()
}

// read serves the server's reads: the bytes of one T-message at a time.
func (c *conn) read(p []byte) (int, error) {
	if err := c.next(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur < 0 {
		return 0, io.EOF // cannot happen: next returned with a message
	}
	s := &c.slots[c.cur]
	rest := s.size - c.curOff
	p = p[:min(uint32(len(p)), rest)]
	n := 0
	if c.curOff < s.headLen {
		n = copy(p, s.head[c.curOff:s.headLen])
	}
	if n < len(p) {
		m, err := s.chain.ReadAt(p[n:], int64(c.curOff)+int64(n))
		n += m
		if err != nil {
			return n, err // cannot happen: size <= readable length
		}
	}
	c.curOff += uint32(n)
	if c.curOff == s.size {
		s.state = slotRead
		c.cur = -1
		c.served++
	}
	return n, nil
}

// write takes the server's replies, each routed by its tag (a slot index)
// into that slot's writable buffers.
func (c *conn) write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	total := len(p)
	for len(p) > 0 {
		if c.whave < hdrLen {
			k := copy(c.whdr[c.whave:hdrLen], p)
			c.whave += uint32(k)
			p = p[k:]
			if c.whave < hdrLen {
				break
			}
			if err := c.startReply(); err != nil {
				c.failed(err)
			}
		} else {
			k := min(uint32(len(p)), c.wsize-c.whave)
			c.bodyBytes(p[:k])
			c.whave += k
			p = p[k:]
		}
		if c.whave >= hdrLen && c.whave == c.wsize {
			c.endReply()
		}
	}
	return total, nil
}

// startReply looks at a reply's header and finds its slot. A reply that
// has none is dropped: a NOTAG reply is the server's answer to a message it
// could not decode, and fails the device (which request it belonged to is
// unknown).
func (c *conn) startReply() error {
	le := binary.LittleEndian
	c.wsize = le.Uint32(c.whdr[hdrSize:])
	c.wtyp = c.whdr[hdrType]
	tag := le.Uint16(c.whdr[hdrTag:])
	c.wslot, c.wdrop = -1, -1
	c.wlen, c.wdirect = c.wsize, false
	if c.wsize < hdrLen {
		c.wsize, c.wlen = hdrLen, hdrLen // cannot happen: the server writes whole headers
		return errors.New("virtio-9p: the 9P server sent a reply shorter than its header")
	}
	c.mu.Lock()
	closed := c.closed
	ok := int(tag) < len(c.slots) && c.slots[tag].state == slotRead
	c.mu.Unlock()
	var staged uint32
	var ran bool
	if ok {
		staged, ran = c.finishRead(&c.slots[tag])
	}
	if closed {
		return nil
	}
	if !ok {
		if tag == noTag {
			return queue.Guestf(queue.BadRequest, "a 9P message the server could not decode")
		}
		return errors.New("virtio-9p: the 9P server replied to a request not in flight")
	}
	s := &c.slots[tag]
	var h [rlerrorLen]byte
	copy(h[:], c.whdr[:hdrLen])
	le.PutUint16(h[hdrTag:], s.guestTag)
	hlen := hdrLen
	if ran && c.wtyp == tRread && c.wsize == rlerrorLen {
		// A staged read: the data is in the chain already, and the
		// server's Rread says count 0 (its buffer holds nothing).
		c.wlen, c.wdirect = rlerrorLen+staged, true
		c.d.counts.inc(cDirectReads)
		le.PutUint32(h[hdrSize:], c.wlen)
		le.PutUint32(h[hdrLen:], staged)
		hlen = rlerrorLen
	}
	if c.wlen > s.chain.WritableLen() {
		c.wdrop = int(tag)
		return queue.Guestf(queue.BadRequest, "%d writable bytes for a %d-byte 9P reply (type %d)", s.chain.WritableLen(), c.wlen, c.wtyp)
	}
	if _, err := s.chain.WriteAt(h[:hlen], 0); err != nil {
		return err // cannot happen: wlen <= writable length
	}
	c.wslot = int(tag)
	return nil
}

// bodyBytes copies reply bytes after the header into the slot's chain.
func (c *conn) bodyBytes(b []byte) {
	if c.wtyp == tRversion && c.whave < versionMSize+4 {
		copy(c.whdr[c.whave:], b)
	}
	if c.wslot >= 0 && !c.wdirect {
		c.slots[c.wslot].chain.WriteAt(b, int64(c.whave)) // fits: checked in startReply
	}
}

// endReply completes the slot of a reply written whole.
func (c *conn) endReply() {
	c.mu.Lock()
	c.served--
	if c.wslot >= 0 && c.slots[c.wslot].version {
		c.versions--
	}
	if c.wslot >= 0 && c.slots[c.wslot].open {
		c.slots[c.wslot].open = false
		c.opening--
	}
	if c.wslot >= 0 && c.wtyp == tRversion && c.wsize >= versionMSize+4 {
		m := binary.LittleEndian.Uint32(c.whdr[versionMSize:])
		c.versioned = m != 0
		if m != 0 {
			c.msize = m
			c.attached = false
		}
	}
	if c.wslot >= 0 {
		c.trackFid(&c.slots[c.wslot], c.wtyp)
	}
	c.mu.Unlock()
	if c.wslot >= 0 {
		c.complete(uint16(c.wslot), c.wlen)
	}
	if c.wdrop >= 0 {
		// The device failed (startReply): nothing more is pushed, but
		// the slot must not look in flight to pause.
		c.release(uint16(c.wdrop))
	}
	c.whave, c.wsize, c.wlen, c.wslot, c.wdirect, c.wdrop = 0, 0, 0, -1, false, -1
}

// serverEnd is the conn as the p9 server sees it: Close is a no-op, the
// device ends the connection itself (stop).
type serverEnd struct{ c *conn }

func (e serverEnd) Read(p []byte) (int, error)  { return e.c.read(p) }
func (e serverEnd) Write(p []byte) (int, error) { return e.c.write(p) }
func (e serverEnd) Close() error                { return nil }
