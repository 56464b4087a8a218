package queue

import (
	"fmt"
	"io"
)

// Buffer is one guest buffer of a chain: its guest physical address and the
// host bytes backing it. Data aliases guest memory, which the guest may change
// at any time: copy what you validate.
type Buffer struct {
	GPA  uint64
	Data []byte
}

// Chain is one descriptor chain taken from a queue: its device-readable
// buffers, then its device-writable ones. A Chain is reused across Pops: its
// buffer lists keep their backing arrays, so steady-state Pops do not
// allocate. The zero value is ready to use.
type Chain struct {
	head     uint16
	readable []Buffer
	writable []Buffer
	rlen     uint64
	wlen     uint64
	descs    int
	ring     int // descriptors taken from the queue's own table (not indirect entries)
	sawWrite bool
}

func (c *Chain) reset(head uint16) {
	clear(c.readable) // drop references to guest memory
	clear(c.writable)
	*c = Chain{head: head, readable: c.readable[:0], writable: c.writable[:0]}
}

// Head returns the index of the chain's head descriptor (the used ring id).
func (c *Chain) Head() uint16 { return c.head }

// Descriptors returns how many descriptors the chain walk read, including
// zero-length ones and the one pointing at an indirect table.
func (c *Chain) Descriptors() int { return c.descs }

// RingDescriptors returns how many entries of the queue's descriptor table
// the chain occupies (an indirect table's entries are not counted): while
// the device holds chains of RingDescriptors summing to the queue size, the
// driver cannot make another available.
func (c *Chain) RingDescriptors() int { return c.ring }

// Used is one used ring entry to be pushed with Queue.PushUsed: a chain's
// head and the bytes the device wrote into it. Make it with Chain.Used.
type Used struct {
	head    uint16
	written uint32
}

// Used returns c's used ring entry reporting written bytes, so the chain's
// buffers can be reused for another Pop before the entry is pushed. written
// larger than the chain's writable bytes is a host bug and an error.
func (c *Chain) Used(written uint32) (Used, error) {
	if uint64(written) > c.wlen {
		return Used{}, fmt.Errorf("virtio queue: device reports %d bytes written into %d writable bytes", written, c.wlen)
	}
	return Used{head: c.head, written: written}, nil
}

// Unwritten returns the entry reporting that nothing was written: the chain
// goes back to the driver empty (a frame dropped after some of its chains
// were filled).
func (u Used) Unwritten() Used { return Used{head: u.head} }

// Readable returns the device-readable buffers in chain order. The slice is
// valid until the next Pop into c.
func (c *Chain) Readable() []Buffer { return c.readable }

// Writable returns the device-writable buffers in chain order. The slice is
// valid until the next Pop into c.
func (c *Chain) Writable() []Buffer { return c.writable }

// ReadableLen returns the total bytes of the readable buffers.
func (c *Chain) ReadableLen() uint32 { return uint32(c.rlen) }

// WritableLen returns the total bytes of the writable buffers.
func (c *Chain) WritableLen() uint32 { return uint32(c.wlen) }

// ReadAt copies from the readable buffers, seen as one byte stream, starting
// at off. Like io.ReaderAt it returns io.EOF when fewer than len(p) bytes
// remain.
func (c *Chain) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.EOF
	}
	n := 0
	for _, b := range c.readable {
		if len(p) == 0 {
			break
		}
		if uint64(off) >= uint64(len(b.Data)) {
			off -= int64(len(b.Data))
			continue
		}
		k := copy(p, b.Data[off:])
		n += k
		p = p[k:]
		off = 0
	}
	if len(p) > 0 {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the writable buffers, seen as one byte stream,
// starting at off. It returns io.ErrShortWrite when they end first.
func (c *Chain) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, io.ErrShortWrite
	}
	n := 0
	for _, b := range c.writable {
		if len(p) == 0 {
			break
		}
		if uint64(off) >= uint64(len(b.Data)) {
			off -= int64(len(b.Data))
			continue
		}
		k := copy(b.Data[off:], p)
		n += k
		p = p[k:]
		off = 0
	}
	if len(p) > 0 {
		return n, io.ErrShortWrite
	}
	return n, nil
}

// AppendRange appends to dst the parts of bufs that make up bytes
// [off, off+n) of their concatenation, and returns the extended slice. It
// appends less when bufs end first. Use it to pick a request's data segments
// out of a chain for a scatter/gather system call.
func AppendRange(dst []Buffer, bufs []Buffer, off, n uint64) []Buffer {
	for _, b := range bufs {
		if n == 0 {
			break
		}
		l := uint64(len(b.Data))
		if off >= l {
			off -= l
			continue
		}
		k := min(l-off, n)
		dst = append(dst, Buffer{GPA: b.GPA + off, Data: b.Data[off : off+k : off+k]})
		n -= k
		off = 0
	}
	return dst
}
