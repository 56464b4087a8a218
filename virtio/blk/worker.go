package blk

import (
	"context"
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// worker serves one queue. Everything it reuses per request lives here, so
// the steady state does not allocate.
type worker struct {
	d     *Device
	img   *image
	index int
	q     *queue.Queue
	irq   virtio.Interrupt
	fail  func(error)
	kick  chan struct{}

	flush   bool // the driver accepted VIRTIO_BLK_F_FLUSH (else write-through)
	discard bool // the driver accepted DISCARD
	zeroes  bool // the driver accepted WRITE_ZEROES

	chain queue.Chain
	segs  []queue.Buffer
	iov   []unix.Iovec
	hdr   [hdrSize]byte
	dwz   [max(maxDiscardSeg, maxWriteZeroSeg) * dwzSize]byte
}

func newWorker(d *Device, index int, q *queue.Queue, a virtio.Activation) *worker {
	return &worker{
		d: d, img: d.img, index: index, q: q, irq: a.Interrupt, fail: a.Fail,
		kick:    make(chan struct{}, 1),
		flush:   a.Features&FFlush != 0,
		discard: a.Features&FDiscard != 0,
		zeroes:  a.Features&FWriteZeroes != 0,
		iov:     make([]unix.Iovec, iovMax),
	}
}

// run drains the queue at start (the driver may have queued requests before
// DRIVER_OK) and after every kick, until ctx ends or the guest breaks the
// protocol.
func (w *worker) run(ctx context.Context) {
	for {
		if err := w.drain(ctx); err != nil {
			w.failed(err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
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
			ok, err := w.q.Pop(&w.chain)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			written, err := w.handle(&w.chain)
			if err != nil {
				w.q.Fail(err)
				return err
			}
			if err := w.q.Push(&w.chain, written); err != nil {
				return err
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

// handle serves one request and writes its status byte. It returns the used
// length, or a guest error when the request cannot be answered at all.
func (w *worker) handle(c *queue.Chain) (uint32, error) {
	rlen, wlen := uint64(c.ReadableLen()), uint64(c.WritableLen())
	if rlen < hdrSize {
		return 0, queue.Guestf(queue.BadRequest, "a block request with a %d-byte header (want 16 readable bytes)", rlen)
	}
	if wlen < 1 {
		return 0, queue.Guestf(queue.BadRequest, "a block request with no writable status byte")
	}
	if _, err := c.ReadAt(w.hdr[:], 0); err != nil {
		return 0, err // cannot happen: rlen >= 16
	}
	typ := binary.LittleEndian.Uint32(w.hdr[hdrType:])
	sector := binary.LittleEndian.Uint64(w.hdr[hdrSector:])
	status := w.serve(c, typ, sector, rlen-hdrSize, wlen-1)
	statusAt := c.Writable()[len(c.Writable())-1]
	statusAt.Data[len(statusAt.Data)-1] = status
	return uint32(wlen), nil
}

// serve runs the request and counts it; in and out are the data bytes
// after the header (device-readable) and before the status byte
// (device-writable).
func (w *worker) serve(c *queue.Chain, typ uint32, sector, out, in uint64) byte {
	img, n := w.img, &w.d.counts
	switch typ {
	case TypeIn:
		n.inc(cIn)
		if out != 0 {
			return w.refuse()
		}
		off, ok := img.byteRange(sector, in)
		if !ok {
			return w.refuse()
		}
		if in == 0 {
			return StatusOK
		}
		w.segs = queue.AppendRange(w.segs[:0], c.Writable(), 0, in)
		if err := img.readv(w.segs, off, w.iov); err != nil {
			return w.ioError("virtio-blk: read failed", err)
		}
		n.add(cReadBytes, in)
		return StatusOK

	case TypeOut:
		n.inc(cOut)
		if img.readOnly || in != 0 {
			return w.refuse()
		}
		off, ok := img.byteRange(sector, out)
		if !ok {
			return w.refuse()
		}
		if out == 0 {
			return StatusOK
		}
		w.segs = queue.AppendRange(w.segs[:0], c.Readable(), hdrSize, out)
		if err := img.writev(w.segs, off, w.iov); err != nil {
			return w.ioError("virtio-blk: write failed", err)
		}
		n.add(cWriteBytes, out)
		return w.writeThrough()

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
	return w.writeThrough()
}

// writeThrough syncs after a write when the driver has no FLUSH to ask for.
func (w *worker) writeThrough() byte {
	if w.flush {
		return StatusOK
	}
	if err := w.img.sync(); err != nil {
		return w.ioError("virtio-blk: write-through sync failed", err)
	}
	return StatusOK
}
