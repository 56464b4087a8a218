// Package queue is the device side of a virtio split virtqueue (Virtio
// 1.2 §2.7): it takes descriptor chains the driver made available, checks
// every guest-controlled index, address and length, and returns chains
// through the used ring, telling the caller when the guest wants an
// interrupt.
//
// The guest is hostile. Every read of a ring or descriptor is done once into
// a local and validated; every buffer is checked against guest RAM with
// overflow-checked arithmetic (through guestmem); chain walks are bounded so
// a looping chain terminates. The first protocol violation fails the queue:
// Pop returns a *GuestError (matching ErrGuest) from then on, and the
// transport is expected to set DEVICE_NEEDS_RESET.
//
// Zero-length descriptors are allowed and skipped: their flags and next
// field are checked like any other, but their address is never used and
// they add no buffer to the chain.
//
// A Queue is used by one goroutine at a time (the device's worker for it).
package queue

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/corral-vmm/corral/guestmem"
)

// Ring layout constants (Virtio 1.2 §2.7).
const (
	// MaxSize is the largest queue size the split ring format allows.
	MaxSize = 32768
	// DefaultMaxIndirect is the default cap on the entries of one indirect
	// descriptor table.
	DefaultMaxIndirect = 1024

	descSize = 16 // struct virtq_desc
	descAddr = 0  // le64 addr
	descLen  = 8  // le32 len
	descFlag = 12 // le16 flags
	descNext = 14 // le16 next

	availFlags = 0 // le16 flags
	availIdx   = 2 // le16 idx
	availRing  = 4 // le16 ring[size], then le16 used_event

	usedFlags    = 0 // le16 flags
	usedIdx      = 2 // le16 idx
	usedRing     = 4 // struct virtq_used_elem ring[size], then le16 avail_event
	usedElemSize = 8 // struct virtq_used_elem
	usedElemID   = 0 // le32 id
	usedElemLen  = 4 // le32 len

	descAlign  = 16
	availAlign = 2
	usedAlign  = 4
)

// Descriptor flags (virtq_desc.flags).
const (
	DescFNext     = 1 // VIRTQ_DESC_F_NEXT: the chain continues at next
	DescFWrite    = 2 // VIRTQ_DESC_F_WRITE: device-writable buffer
	DescFIndirect = 4 // VIRTQ_DESC_F_INDIRECT: the buffer is a descriptor table
)

// Ring flags.
const (
	AvailFNoInterrupt = 1 // VIRTQ_AVAIL_F_NO_INTERRUPT: driver asks for no interrupts
	UsedFNoNotify     = 1 // VIRTQ_USED_F_NO_NOTIFY: device asks for no kicks
)

// Layout is where and how large the driver made a queue: the values it wrote
// to queue_size, queue_desc, queue_driver (avail ring) and queue_device
// (used ring).
type Layout struct {
	Size  uint16
	Desc  uint64
	Avail uint64
	Used  uint64
}

// DescBytes is the size of the descriptor table of a queue of size n.
func DescBytes(n uint16) uint64 { return descSize * uint64(n) }

// AvailBytes is the size of the avail ring (with used_event) of a queue of size n.
func AvailBytes(n uint16) uint64 { return 6 + 2*uint64(n) }

// UsedBytes is the size of the used ring (with avail_event) of a queue of size n.
func UsedBytes(n uint16) uint64 { return 6 + usedElemSize*uint64(n) }

// Options are the negotiated ring features and the device's limits.
type Options struct {
	// MaxSize is the largest queue size the device offers; 0 means MaxSize.
	MaxSize uint16
	// EventIdx is VIRTIO_F_EVENT_IDX: used_event/avail_event suppression.
	EventIdx bool
	// IndirectDesc is VIRTIO_F_INDIRECT_DESC: indirect descriptor tables.
	IndirectDesc bool
	// MaxIndirect caps the entries of an indirect table; 0 means DefaultMaxIndirect.
	MaxIndirect uint16
	// NextAvail and NextUsed are the ring indices to start from: 0 for a
	// fresh queue, other values when restoring one.
	NextAvail, NextUsed uint16
}

// Queue is the device side of one split virtqueue.
type Queue struct {
	mem         *guestmem.Memory
	size        uint16
	mask        uint16
	desc        uint64
	avail       uint64
	used        uint64
	eventIdx    bool
	indirect    bool
	maxIndirect uint16

	lastAvail   uint16 // next avail ring index to take
	shadowAvail uint16 // last avail idx read from the guest
	nextUsed    uint16 // next used ring index to fill (and the published used idx)
	signalled   uint16 // used idx when the caller last decided about an interrupt
	err         error  // first guest error; the queue is failed once set
}

// New checks the driver's layout and returns a ready queue. The size must be
// a power of two no larger than the device maximum; the descriptor table must
// be 16-byte, the avail ring 2-byte and the used ring 4-byte aligned, and each
// must lie wholly inside guest RAM. A bad layout is a *GuestError.
func New(mem *guestmem.Memory, l Layout, o Options) (*Queue, error) {
	if mem == nil {
		return nil, fmt.Errorf("virtio queue: no guest memory")
	}
	max := uint32(o.MaxSize)
	if max == 0 || max > MaxSize {
		max = MaxSize
	}
	if l.Size == 0 || l.Size&(l.Size-1) != 0 || uint32(l.Size) > max {
		return nil, Guestf(BadLayout, "queue size %d (want a power of two, 1..%d)", l.Size, max)
	}
	if l.Desc%descAlign != 0 || l.Avail%availAlign != 0 || l.Used%usedAlign != 0 {
		return nil, Guestf(BadLayout, "misaligned rings: desc %#x avail %#x used %#x (want 16/2/4-byte alignment)", l.Desc, l.Avail, l.Used)
	}
	areas := [...]struct {
		name string
		gpa  uint64
		n    uint64
	}{
		{"descriptor table", l.Desc, DescBytes(l.Size)},
		{"avail ring", l.Avail, AvailBytes(l.Size)},
		{"used ring", l.Used, UsedBytes(l.Size)},
	}
	for _, a := range areas {
		if !mem.Contains(a.gpa, a.n) {
			return nil, Guestf(BadLayout, "%s at %#x of %#x bytes outside guest RAM", a.name, a.gpa, a.n)
		}
	}
	maxInd := o.MaxIndirect
	if maxInd == 0 {
		maxInd = DefaultMaxIndirect
	}
	return &Queue{
		mem: mem, size: l.Size, mask: l.Size - 1,
		desc: l.Desc, avail: l.Avail, used: l.Used,
		eventIdx: o.EventIdx, indirect: o.IndirectDesc, maxIndirect: maxInd,
		lastAvail: o.NextAvail, shadowAvail: o.NextAvail,
		nextUsed: o.NextUsed, signalled: o.NextUsed,
	}, nil
}

// Size returns the queue size the driver chose.
func (q *Queue) Size() uint16 { return q.size }

// NextAvail returns the avail ring index the next Pop takes.
func (q *Queue) NextAvail() uint16 { return q.lastAvail }

// NextUsed returns the used idx the device has published.
func (q *Queue) NextUsed() uint16 { return q.nextUsed }

// Err returns the guest error that failed the queue, or nil.
func (q *Queue) Err() error { return q.err }

// Fail marks the queue failed with err (a device model found a malformed
// request). Later Pops return err. The first error sticks.
func (q *Queue) Fail(err error) {
	if q.err == nil && err != nil {
		q.err = err
	}
}

func (q *Queue) fail(err error) error {
	q.Fail(err)
	return q.err
}

// pending reads the driver's avail idx (acquire) and returns how many chains
// are waiting. An idx more than the queue size ahead is a guest error.
func (q *Queue) pending() (uint16, error) {
	idx, err := q.mem.LoadUint16Acquire(q.avail + availIdx)
	if err != nil {
		return 0, fmt.Errorf("virtio queue: read avail idx: %w", err)
	}
	n := idx - q.lastAvail
	if n > q.size {
		return 0, Guestf(AvailJump, "avail idx %d with %d taken: %d chains pending in a queue of %d", idx, q.lastAvail, n, q.size)
	}
	q.shadowAvail = idx
	return n, nil
}

// Pop takes the next available chain into c, reusing c's buffer lists. It
// returns false when the driver has made nothing new available. On a guest
// error the queue is failed and the error (matching ErrGuest) returned.
func (q *Queue) Pop(c *Chain) (bool, error) {
	if q == nil || q.mem == nil {
		return false, ErrNotReady
	}
	if q.err != nil {
		return false, q.err
	}
	if q.lastAvail == q.shadowAvail {
		n, err := q.pending()
		if err != nil {
			return false, q.fail(err)
		}
		if n == 0 {
			return false, nil
		}
	}
	slot := uint64(q.lastAvail & q.mask)
	head, err := q.mem.Uint16(q.avail + availRing + 2*slot)
	if err != nil {
		return false, q.fail(fmt.Errorf("virtio queue: read avail ring: %w", err))
	}
	if err := q.walk(c, head); err != nil {
		return false, q.fail(err)
	}
	q.lastAvail++
	return true, nil
}

// walk fills c with the chain that starts at descriptor head.
func (q *Queue) walk(c *Chain, head uint16) error {
	c.reset(head)
	if head >= q.size {
		return Guestf(BadIndex, "head descriptor %d in a queue of %d", head, q.size)
	}
	table, tableLen := q.desc, uint32(q.size)
	inIndirect := false
	idx := uint32(head)
	budget := tableLen // descriptors left before the chain counts as looping
	for {
		if budget == 0 {
			where := "descriptor table"
			if inIndirect {
				where = "indirect table"
			}
			return Guestf(ChainTooLong, "chain from head %d longer than its %s of %d (a loop?)", head, where, tableLen)
		}
		budget--
		raw, err := q.mem.Slice(table+uint64(idx)*descSize, descSize)
		if err != nil {
			// The tables were checked to be in RAM, so this is a host bug.
			return fmt.Errorf("virtio queue: read descriptor %d: %w", idx, err)
		}
		// Read each field once: the guest may change them under us.
		addr := binary.LittleEndian.Uint64(raw[descAddr:])
		length := binary.LittleEndian.Uint32(raw[descLen:])
		flags := binary.LittleEndian.Uint16(raw[descFlag:])
		next := binary.LittleEndian.Uint16(raw[descNext:])
		c.descs++
		if !inIndirect {
			c.ring++
		}

		if flags&DescFIndirect != 0 {
			switch {
			case !q.indirect:
				return Guestf(IndirectNotNegotiated, "indirect descriptor %d without VIRTIO_F_INDIRECT_DESC", idx)
			case inIndirect:
				return Guestf(NestedIndirect, "indirect descriptor %d inside an indirect table", idx)
			case flags&DescFNext != 0:
				return Guestf(BadIndirect, "indirect descriptor %d with NEXT set", idx)
			case length == 0 || length%descSize != 0:
				return Guestf(BadIndirect, "indirect table of %d bytes (want a positive multiple of 16)", length)
			case length/descSize > uint32(q.maxIndirect):
				return Guestf(BadIndirect, "indirect table of %d entries (at most %d)", length/descSize, q.maxIndirect)
			}
			if _, carry := bits.Add64(addr, uint64(length), 0); carry != 0 || !q.mem.Contains(addr, uint64(length)) {
				return Guestf(BadIndirect, "indirect table at %#x len %#x outside guest RAM", addr, length)
			}
			table, tableLen = addr, length/descSize
			inIndirect = true
			idx, budget = 0, tableLen
			continue
		}

		write := flags&DescFWrite != 0
		if !write && c.sawWrite {
			return Guestf(WriteOrder, "device-readable descriptor %d after a device-writable one", idx)
		}
		c.sawWrite = c.sawWrite || write
		if length > 0 {
			if _, carry := bits.Add64(addr, uint64(length), 0); carry != 0 {
				return Guestf(BufferOutOfRange, "descriptor %d at %#x len %#x that wraps the address space", idx, addr, length)
			}
			data, err := q.mem.Slice(addr, uint64(length))
			if err != nil {
				return Guestf(BufferOutOfRange, "descriptor %d at %#x len %#x outside guest RAM", idx, addr, length)
			}
			b := Buffer{GPA: addr, Data: data}
			if write {
				c.writable = append(c.writable, b)
				c.wlen += uint64(length)
			} else {
				c.readable = append(c.readable, b)
				c.rlen += uint64(length)
			}
			if c.wlen > math.MaxUint32 || c.rlen > math.MaxUint32 {
				return Guestf(ChainTooBig, "chain from head %d with more than 4 GiB in one direction", head)
			}
		}
		if flags&DescFNext == 0 {
			return nil
		}
		if uint32(next) >= tableLen {
			return Guestf(BadIndex, "next descriptor %d in a table of %d", next, tableLen)
		}
		idx = uint32(next)
	}
}

// Push returns chain c to the driver through the used ring, reporting that
// the device wrote written bytes into its writable buffers, and publishes the
// new used idx with release ordering.
func (q *Queue) Push(c *Chain, written uint32) error {
	if q == nil || q.mem == nil {
		return ErrNotReady
	}
	if uint64(written) > c.wlen {
		return fmt.Errorf("virtio queue: device reports %d bytes written into %d writable bytes", written, c.wlen)
	}
	slot := uint64(q.nextUsed & q.mask)
	elem, err := q.mem.Slice(q.used+usedRing+slot*usedElemSize, usedElemSize)
	if err != nil {
		return fmt.Errorf("virtio queue: used ring: %w", err)
	}
	binary.LittleEndian.PutUint32(elem[usedElemID:], uint32(c.head))
	binary.LittleEndian.PutUint32(elem[usedElemLen:], written)
	q.nextUsed++
	if err := q.mem.StoreUint16Release(q.used+usedIdx, q.nextUsed); err != nil {
		return fmt.Errorf("virtio queue: publish used idx: %w", err)
	}
	return nil
}

// PushUsed returns several chains at once, in order, and publishes the used
// idx once with release ordering: the driver sees all of them or none (a
// virtio-net frame spread over several receive chains). The entries must be
// of chains Pop took and no Push returned yet.
func (q *Queue) PushUsed(u []Used) error {
	if q == nil || q.mem == nil {
		return ErrNotReady
	}
	if len(u) > int(q.lastAvail-q.nextUsed) {
		return fmt.Errorf("virtio queue: pushing %d used entries with %d chains in flight", len(u), q.lastAvail-q.nextUsed)
	}
	if len(u) == 0 {
		return nil
	}
	next := q.nextUsed
	for _, e := range u {
		slot := uint64(next & q.mask)
		elem, err := q.mem.Slice(q.used+usedRing+slot*usedElemSize, usedElemSize)
		if err != nil {
			return fmt.Errorf("virtio queue: used ring: %w", err)
		}
		binary.LittleEndian.PutUint32(elem[usedElemID:], uint32(e.head))
		binary.LittleEndian.PutUint32(elem[usedElemLen:], e.written)
		next++
	}
	q.nextUsed = next
	if err := q.mem.StoreUint16Release(q.used+usedIdx, q.nextUsed); err != nil {
		return fmt.Errorf("virtio queue: publish used idx: %w", err)
	}
	return nil
}

// NeedInterrupt reports whether the driver wants an interrupt for the chains
// pushed since the last call: with VIRTIO_F_EVENT_IDX when the used idx
// passed used_event, otherwise unless VIRTQ_AVAIL_F_NO_INTERRUPT is set. The
// caller raises the queue's interrupt when it returns true.
func (q *Queue) NeedInterrupt() (bool, error) {
	if q == nil || q.mem == nil {
		return false, ErrNotReady
	}
	old, now := q.signalled, q.nextUsed
	if old == now {
		return false, nil
	}
	q.signalled = now
	// Order the used idx store before the reads of the driver's flags.
	guestmem.Fence()
	if q.eventIdx {
		ev, err := q.mem.Uint16(q.avail + availRing + 2*uint64(q.size))
		if err != nil {
			return false, fmt.Errorf("virtio queue: read used_event: %w", err)
		}
		return NeedEvent(ev, now, old), nil
	}
	flags, err := q.mem.Uint16(q.avail + availFlags)
	if err != nil {
		return false, fmt.Errorf("virtio queue: read avail flags: %w", err)
	}
	return flags&AvailFNoInterrupt == 0, nil
}

// NeedEvent is vring_need_event: whether moving an index from old to now
// crossed event, with 16-bit wrap-around.
func NeedEvent(event, now, old uint16) bool {
	return now-event-1 < now-old
}

// DisableNotifications asks the driver not to kick while the device is
// draining the queue (VIRTQ_USED_F_NO_NOTIFY; with VIRTIO_F_EVENT_IDX the
// stale avail_event does the same).
func (q *Queue) DisableNotifications() error {
	if q == nil || q.mem == nil {
		return ErrNotReady
	}
	if q.eventIdx {
		return nil
	}
	if err := q.mem.PutUint16(q.used+usedFlags, UsedFNoNotify); err != nil {
		return fmt.Errorf("virtio queue: write used flags: %w", err)
	}
	return nil
}

// EnableNotifications asks the driver to kick for the next chain it makes
// available, then re-reads the avail idx: it returns true when chains arrived
// meanwhile (the caller must drain again rather than sleep).
func (q *Queue) EnableNotifications() (bool, error) {
	if q == nil || q.mem == nil {
		return false, ErrNotReady
	}
	if q.err != nil {
		return false, q.err
	}
	var err error
	if q.eventIdx {
		err = q.mem.PutUint16(q.used+usedRing+usedElemSize*uint64(q.size), q.lastAvail)
	} else {
		err = q.mem.PutUint16(q.used+usedFlags, 0)
	}
	if err != nil {
		return false, fmt.Errorf("virtio queue: enable notifications: %w", err)
	}
	// The store above must be visible before we look at the avail idx, or a
	// kick could be lost.
	guestmem.Fence()
	n, err := q.pending()
	if err != nil {
		return false, q.fail(err)
	}
	return n != 0, nil
}

// State is where a queue is, for a snapshot: its layout and the device's
// ring indices. With the guest memory the rings live in, it is all a
// restored device needs to carry on.
type State struct {
	Layout Layout
	// NextAvail is the avail ring index the next Pop takes.
	NextAvail uint16
	// NextUsed is the used idx the device has published.
	NextUsed uint16
	// Signalled is the used idx when the device last decided about an
	// interrupt (NeedInterrupt's "old" with VIRTIO_F_EVENT_IDX).
	Signalled uint16
}

// State returns the queue's state. Call it only while no worker uses the
// queue (the device is paused).
func (q *Queue) State() State {
	return State{
		Layout:    Layout{Size: q.size, Desc: q.desc, Avail: q.avail, Used: q.used},
		NextAvail: q.lastAvail, NextUsed: q.nextUsed, Signalled: q.signalled,
	}
}

// InFlight returns how many chains Pop took that Push has not returned.
func (q *Queue) InFlight() uint16 { return q.lastAvail - q.nextUsed }

// ErrRestore is matched by every reason Restore refuses a saved state.
var ErrRestore = errors.New("virtio queue: saved state does not fit guest memory")

// Restore makes a queue at a saved state s over the layout l the transport
// restored (which must be s.Layout) with options o (whose NextAvail and
// NextUsed are ignored). The layout is checked as New checks it, and the
// used idx in guest memory must equal s.NextUsed: a snapshot whose memory
// and device state disagree would give the guest a broken ring. Errors
// match ErrRestore.
func Restore(mem *guestmem.Memory, l Layout, o Options, s State) (*Queue, error) {
	if l != s.Layout {
		return nil, fmt.Errorf("%w: layout %+v differs from the queue's saved %+v", ErrRestore, l, s.Layout)
	}
	o.NextAvail, o.NextUsed = s.NextAvail, s.NextUsed
	q, err := New(mem, l, o)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrRestore, err)
	}
	used, err := mem.LoadUint16Acquire(l.Used + usedIdx)
	if err != nil {
		return nil, fmt.Errorf("%w: read used idx: %v", ErrRestore, err)
	}
	if used != s.NextUsed {
		return nil, fmt.Errorf("%w: guest used idx %d differs from saved %d", ErrRestore, used, s.NextUsed)
	}
	if n := s.NextAvail - s.NextUsed; n > l.Size {
		return nil, fmt.Errorf("%w: next avail %d is %d past next used %d in a queue of %d", ErrRestore, s.NextAvail, n, s.NextUsed, l.Size)
	}
	q.signalled = s.Signalled
	return q, nil
}

// Unpop gives back the chain the last Pop took, which the device has not
// pushed and will not use now (virtio-net holding a receive buffer when it
// is paused): the next Pop takes it again. It fails when no chain is in
// flight.
func (q *Queue) Unpop() error {
	if q == nil || q.mem == nil {
		return ErrNotReady
	}
	if q.lastAvail == q.nextUsed {
		return errors.New("virtio queue: unpop with no chain in flight")
	}
	q.lastAvail--
	return nil
}
