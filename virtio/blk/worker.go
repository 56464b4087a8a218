package blk

import (
	"context"
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/resched"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/kickfd"
	"github.com/corral-vmm/corral/virtio/queue"
)

// batchMax bounds the requests taken from the queue before they are served:
// adjacent reads or writes among them are merged into one transfer.
const batchMax = 32

// mergeMax bounds the bytes of one merged transfer (a single request may be
// larger), so the requests in it do not wait long for each other.
const mergeMax = 1 << 20

// bounceSize is the size of a worker's bounce buffer, through which O_DIRECT
// transfers guest buffers that are not aligned, a piece at a time.
const bounceSize = 256 << 10

// request is one chain of a batch: its header and, for IN and OUT, what the
// transfer needs.
type request struct {
	chain   queue.Chain
	typ     uint32
	sector  uint64
	out, in uint64 // data bytes after the header / before the status byte
	done    bool   // status is the answer (IN and OUT are answered while parsed or by serveData)
	data    bool   // an IN or OUT that passed the checks: off, n, lo, hi are set
	status  byte
	off, n  uint64 // the image byte range
	lo, hi  int    // its data segments: w.segs[lo:hi]
}

// worker serves one queue. Everything it reuses per request lives here, so
// the steady state does not allocate.
type worker struct {
	d     *Device
	img   *image
	index int
	q     *queue.Queue
	irq   virtio.Interrupt
	fail  func(error)
	kick  *kickfd.FD // what the worker sleeps on between drains

	flush   bool // the driver accepted VIRTIO_BLK_F_FLUSH (else write-through)
	discard bool // the driver accepted DISCARD
	zeroes  bool // the driver accepted WRITE_ZEROES

	batch  [batchMax]request
	used   [batchMax]queue.Used // the batch's completions, published at once
	segs   []queue.Buffer       // the batch's data segments, in request order
	iov    []unix.Iovec
	hdr    [hdrSize]byte
	dwz    [max(maxDiscardSeg, maxWriteZeroSeg) * dwzSize]byte
	bounce []byte          // O_DIRECT only: allocated on first use, aligned
	one    [1]queue.Buffer // the bounce buffer as a segment list

	rs resched.Point // drain's, once per batch: run loops on system calls, never blocking in Go
}

func newWorker(d *Device, index int, q *queue.Queue, a virtio.Activation, kick *kickfd.FD) *worker {
	return &worker{
		d: d, img: d.img, index: index, q: q, irq: a.Interrupt, fail: a.Fail,
		kick:    kick,
		flush:   a.Features&FFlush != 0,
		discard: a.Features&FDiscard != 0,
		zeroes:  a.Features&FWriteZeroes != 0,
		iov:     make([]unix.Iovec, iovMax),
	}
}

// run drains the queue at start (the driver may have queued requests before
// DRIVER_OK, or kicked while the device was paused) and after every kick,
// until ctx ends or the guest breaks the protocol. It sleeps in a read of
// the kick eventfd, so the kick wakes this goroutine's thread and the
// requests are served where it wakes; run's waker signals the eventfd when
// ctx ends.
func (w *worker) run(ctx context.Context) {
	for {
		if err := w.drain(ctx); err != nil {
			w.failed(err)
			return
		}
		if ctx.Err() != nil {
			return
		}
		if err := w.kick.Wait(); err != nil {
			w.failed(err)
			return
		}
	}
}

func (w *worker) failed(err error) {
	if errors.Is(err, queue.ErrGuest) {
		w.d.counts.inc(cProtocolErrors)
		w.d.log.Warn("virtio-blk: guest broke the queue protocol; queue stopped", "queue", w.index, "err", err)
	} else {
		w.d.log.Error("virtio-blk: queue failed", "queue", w.index, "err", err)
	}
	if w.fail != nil {
		w.fail(err)
	}
}

// drain serves every available request, signals the driver, and re-arms
// notifications, looping when requests arrived meanwhile.
func (w *worker) drain(ctx context.Context) error {
	for {
		if err := w.q.DisableNotifications(); err != nil {
			return err
		}
		for ctx.Err() == nil {
			w.rs.Check()
			n, popErr := w.pop()
			if err := w.serveBatch(w.batch[:n]); err != nil {
				return err
			}
			if popErr != nil {
				return popErr
			}
			if n < len(w.batch) {
				break // the queue is empty
			}
		}
		if err := w.interrupt(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		more, err := w.q.EnableNotifications()
		if err != nil || !more {
			return err
		}
	}
}

func (w *worker) interrupt() error {
	need, err := w.q.NeedInterrupt()
	if err != nil || !need {
		return err
	}
	if err := w.irq.Signal(w.index); err != nil {
		// The guest may hang waiting, but this is a host fault; keep serving.
		w.d.log.Error("virtio-blk: interrupt failed", "queue", w.index, "err", err)
	}
	return nil
}

// pop takes up to batchMax chains. It stops early when the queue is empty
// or at a guest error, returning the chains taken before it.
func (w *worker) pop() (int, error) {
	for n := range w.batch {
		ok, err := w.q.Pop(&w.batch[n].chain)
		if err != nil || !ok {
			return n, err
		}
	}
	return len(w.batch), nil
}

// serveBatch serves reqs in order, merging runs of adjacent reads or writes
// (serveData), writes each status byte and pushes each chain. A chain that
// cannot be answered fails the queue; the ones before it are answered.
func (w *worker) serveBatch(reqs []request) error {
	w.segs = w.segs[:0]
	var bad error
	for i := range reqs {
		if err := w.parse(&reqs[i]); err != nil {
			reqs, bad = reqs[:i], err
			break
		}
	}
	for i := 0; i < len(reqs); {
		r := &reqs[i]
		switch {
		case r.data:
			i = w.serveData(reqs, i)
			continue
		case !r.done:
			r.status = w.serve(&r.chain, r.typ, r.out, r.in)
		}
		i++
	}
	for i := range reqs {
		r := &reqs[i]
		st := r.chain.Writable()[len(r.chain.Writable())-1]
		st.Data[len(st.Data)-1] = r.status
		u, err := r.chain.Used(uint32(r.in + 1))
		if err != nil {
			return err
		}
		w.used[i] = u
	}
	// One used idx store for the batch: the driver sees its completions
	// together (and drain raises one interrupt for all of them).
	if err := w.q.PushUsed(w.used[:len(reqs)]); err != nil {
		return err
	}
	if bad != nil {
		w.q.Fail(bad)
		return bad
	}
	return nil
}

// parse reads a request's header and checks an IN or OUT request, picking
// out its data segments. It returns a guest error when the request cannot
// be answered at all.
func (w *worker) parse(r *request) error {
	c := &r.chain
	rlen, wlen := uint64(c.ReadableLen()), uint64(c.WritableLen())
	if rlen < hdrSize {
		return queue.Guestf(queue.BadRequest, "a block request with a %d-byte header (want 16 readable bytes)", rlen)
	}
	if wlen < 1 {
		return queue.Guestf(queue.BadRequest, "a block request with no writable status byte")
	}
	if _, err := c.ReadAt(w.hdr[:], 0); err != nil {
		return err // cannot happen: rlen >= 16
	}
	r.typ = binary.LittleEndian.Uint32(w.hdr[hdrType:])
	r.sector = binary.LittleEndian.Uint64(w.hdr[hdrSector:])
	r.out, r.in = rlen-hdrSize, wlen-1
	r.done, r.data, r.status = false, false, StatusOK
	switch r.typ {
	case TypeIn:
		w.d.counts.inc(cIn)
		r.done = true
		r.status = w.prepare(r, c.Writable(), 0, r.in, r.out != 0)
	case TypeOut:
		w.d.counts.inc(cOut)
		r.done = true
		r.status = w.prepare(r, c.Readable(), hdrSize, r.out, w.img.readOnly || r.in != 0)
	}
	return nil
}

// prepare checks an IN or OUT request of n data bytes at bytes [from,
// from+n) of bufs and appends its segments to w.segs; wrong says the data
// is in the wrong direction or the disk is read-only. It returns the answer
// of a request refused or of no data; otherwise the request is left for
// serveData. seg_max and size_max hold per request, as advertised.
func (w *worker) prepare(r *request, bufs []queue.Buffer, from, n uint64, wrong bool) byte {
	if wrong {
		return w.refuse()
	}
	off, ok := w.img.byteRange(r.sector, n)
	if !ok {
		return w.refuse()
	}
	if n == 0 {
		return StatusOK
	}
	lo := len(w.segs)
	w.segs = queue.AppendRange(w.segs, bufs, from, n)
	if len(w.segs)-lo > int(w.d.segMax) {
		w.segs = w.segs[:lo]
		return w.refuse()
	}
	for _, s := range w.segs[lo:] {
		if len(s.Data) > sizeMax {
			w.segs = w.segs[:lo]
			return w.refuse()
		}
	}
	r.data, r.off, r.n, r.lo, r.hi = true, off, n, lo, len(w.segs)
	return StatusOK
}

// serveData serves reqs[i] and the requests after it in the same direction
// that continue where the one before ended, as one transfer of at most
// iovMax segments and mergeMax bytes. If that transfer fails each request
// is tried alone, so each gets its own status. It returns the index after
// the last request served.
func (w *worker) serveData(reqs []request, i int) int {
	first := &reqs[i]
	j, n := mergeRun(reqs, i)
	write := first.typ == TypeOut
	if j-i > 1 && w.transfer(w.segs[first.lo:reqs[j-1].hi], first.off, n, write) == nil {
		synced := w.writeThrough(write)
		for k := i; k < j; k++ {
			reqs[k].status = w.served(&reqs[k], synced)
		}
		return j
	}
	for k := i; k < j; k++ {
		r := &reqs[k]
		if err := w.transfer(w.segs[r.lo:r.hi], r.off, r.n, write); err != nil {
			if write {
				r.status = w.ioError("virtio-blk: write failed", err)
			} else {
				r.status = w.ioError("virtio-blk: read failed", err)
			}
			continue
		}
		r.status = w.served(r, w.writeThrough(write))
	}
	return j
}

// mergeRun returns the end j of the run reqs[i:j] that one transfer
// serves, and its bytes: reqs[i] (an IN or OUT that passed the checks) and
// the requests after it of the same type, each starting where the one
// before ends, while they hold at most iovMax segments and mergeMax bytes.
func mergeRun(reqs []request, i int) (int, uint64) {
	first := &reqs[i]
	j, n := i+1, first.n
	for ; j < len(reqs); j++ {
		r, prev := &reqs[j], &reqs[j-1]
		if !r.data || r.typ != first.typ || r.off != prev.off+prev.n ||
			r.hi-first.lo > iovMax || n+r.n > mergeMax {
			break
		}
		n += r.n
	}
	return j, n
}

// served counts a transferred request and answers it; synced is the
// write-through sync's error.
func (w *worker) served(r *request, synced error) byte {
	if r.typ == TypeIn {
		w.d.counts.add(cReadBytes, r.n)
		return StatusOK
	}
	w.d.counts.add(cWriteBytes, r.n)
	if synced != nil {
		return w.ioError("virtio-blk: write-through sync failed", synced)
	}
	return StatusOK
}

// transfer moves n bytes between segs and the image at off. Without
// O_DIRECT that is one vectored call; with it, a range that is not whole
// blocks goes through the page cache and buffers that are not aligned
// through the bounce buffer.
func (w *worker) transfer(segs []queue.Buffer, off, n uint64, write bool) error {
	img := w.img
	if !img.direct {
		return img.rw(img.fd, segs, off, w.iov, write)
	}
	a := img.align
	if off%a != 0 || n%a != 0 {
		return img.rw(img.bfd, segs, off, w.iov, write)
	}
	for _, s := range segs {
		if uint64(addrOf(s.Data))%a != 0 || uint64(len(s.Data))%a != 0 {
			return w.bounced(segs, off, n, write)
		}
	}
	return img.rw(img.fd, segs, off, w.iov, write)
}

// bounced transfers whole blocks between segs and the O_DIRECT image
// through the worker's aligned bounce buffer, bounceSize bytes at a time.
func (w *worker) bounced(segs []queue.Buffer, off, n uint64, write bool) error {
	if w.bounce == nil {
		w.bounce = alignedBuffer(bounceSize, max(4096, w.img.align))
	}
	cur := segCursor{segs: segs}
	for n > 0 {
		buf := w.bounce[:min(n, bounceSize)]
		w.one[0] = queue.Buffer{Data: buf}
		if write {
			cur.copy(buf, false)
		}
		if err := w.img.rw(w.img.fd, w.one[:], off, w.iov, write); err != nil {
			return err
		}
		if !write {
			cur.copy(buf, true)
		}
		off += uint64(len(buf))
		n -= uint64(len(buf))
	}
	return nil
}

// segCursor is a position in a list of segments.
type segCursor struct {
	segs []queue.Buffer
	skip int // bytes of segs[0] already passed
}

// copy copies between p and the segments at the cursor (into the segments
// when toSegs) and moves the cursor past them.
func (c *segCursor) copy(p []byte, toSegs bool) {
	for len(p) > 0 && len(c.segs) > 0 {
		d := c.segs[0].Data[c.skip:]
		var k int
		if toSegs {
			k = copy(d, p)
		} else {
			k = copy(p, d)
		}
		p = p[k:]
		c.skip += k
		if c.skip == len(c.segs[0].Data) {
			c.segs, c.skip = c.segs[1:], 0
		}
	}
}

// serve answers a request other than IN and OUT and counts it; in and out
// are the data bytes after the header (device-readable) and before the
// status byte (device-writable).
func (w *worker) serve(c *queue.Chain, typ uint32, out, in uint64) byte {
	img, n := w.img, &w.d.counts
	switch typ {
	case TypeFlush:
		n.inc(cFlush)
		if img.readOnly {
			return StatusOK
		}
		if err := img.sync(); err != nil {
			return w.ioError("virtio-blk: flush failed", err)
		}
		return StatusOK

	case TypeGetID:
		n.inc(cGetID)
		if _, err := c.WriteAt(w.d.id[:min(in, IDBytes)], 0); err != nil {
			return w.refuse()
		}
		return StatusOK

	case TypeDiscard, TypeWriteZeroes:
		discard := typ == TypeDiscard
		if discard {
			n.inc(cDiscard)
		} else {
			n.inc(cWriteZeroes)
		}
		if (discard && !w.discard) || (!discard && !w.zeroes) {
			return w.unsupported()
		}
		if img.readOnly || in != 0 {
			return w.refuse()
		}
		return w.discardOrZero(c, out, discard)
	}
	return w.unsupported()
}

// refuse answers a request the guest got wrong.
func (w *worker) refuse() byte {
	w.d.counts.inc(cGuestErrors)
	return StatusIOErr
}

// unsupported answers a request the device does not serve.
func (w *worker) unsupported() byte {
	w.d.counts.inc(cUnsupported)
	return StatusUnsupp
}

// ioError answers a request the host failed to serve; msg is a constant
// (the rate limiter's kind).
func (w *worker) ioError(msg string, err error) byte {
	w.d.counts.inc(cIOErrors)
	w.d.log.Error(msg, "queue", w.index, "err", err)
	return StatusIOErr
}

// discardOrZero serves DISCARD and WRITE_ZEROES: out bytes of 16-byte
// segments follow the header.
func (w *worker) discardOrZero(c *queue.Chain, out uint64, discard bool) byte {
	maxSeg, maxSectors := uint64(maxWriteZeroSeg), uint64(maxWriteZeroSectors)
	if discard {
		maxSeg, maxSectors = maxDiscardSeg, maxDiscardSectors
	}
	if out == 0 || out%dwzSize != 0 || out/dwzSize > maxSeg {
		return w.refuse()
	}
	// Copy the segments once, check them all, then act: the guest cannot
	// change them in between, and a bad segment changes nothing.
	segs := w.dwz[:out]
	if _, err := c.ReadAt(segs, hdrSize); err != nil {
		return w.refuse()
	}
	for pass := 0; pass < 2; pass++ {
		for seg := segs; len(seg) > 0; seg = seg[dwzSize:] {
			sector := binary.LittleEndian.Uint64(seg[dwzSector:])
			num := uint64(binary.LittleEndian.Uint32(seg[dwzNumSectors:]))
			flags := binary.LittleEndian.Uint32(seg[dwzFlags:])
			if flags&^dwzFlagUnmap != 0 || (discard && flags&dwzFlagUnmap != 0) {
				return w.unsupported()
			}
			if num > maxSectors {
				return w.refuse()
			}
			off, ok := w.img.byteRange(sector, num*SectorSize)
			if !ok {
				return w.refuse()
			}
			if pass == 0 || num == 0 {
				continue
			}
			var err error
			if discard {
				err = w.img.discard(off, num*SectorSize)
			} else {
				err = w.img.writeZeroes(off, num*SectorSize, flags&dwzFlagUnmap != 0)
			}
			if err != nil {
				return w.ioError("virtio-blk: discard/write zeroes failed", err)
			}
		}
	}
	if err := w.writeThrough(true); err != nil {
		return w.ioError("virtio-blk: write-through sync failed", err)
	}
	return StatusOK
}

// writeThrough syncs after a write when the driver has no FLUSH to ask for.
func (w *worker) writeThrough(write bool) error {
	if !write || w.flush {
		return nil
	}
	return w.img.sync()
}
