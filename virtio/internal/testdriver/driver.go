// Package testdriver is a mock virtio driver for tests: it lays out a split
// virtqueue's descriptor table, avail ring and used ring in fake guest memory
// exactly as a guest driver would, adds chains (direct and indirect), reads
// completions, and offers raw writes for building hostile rings.
package testdriver

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Descriptor flags, repeated here as a guest driver sees them.
const (
	FNext     = queue.DescFNext
	FWrite    = queue.DescFWrite
	FIndirect = queue.DescFIndirect
)

// Desc is one raw descriptor as it sits in a table.
type Desc struct {
	Addr  uint64
	Len   uint32
	Flags uint16
	Next  uint16
}

// Seg is one buffer of a chain to add: Write marks it device-writable.
type Seg struct {
	Addr  uint64
	Len   uint32
	Write bool
}

// Driver is the guest side of one split virtqueue in fake memory.
type Driver struct {
	Mem      *guestmem.Memory
	L        queue.Layout
	EventIdx bool

	availIdx uint16   // next avail idx the driver publishes
	lastUsed uint16   // next used idx the driver consumes
	free     []uint16 // free descriptor indices (a stack)
	chainLen []uint16 // per head: descriptors the chain holds (0 if free)
	nextOf   []uint16 // per descriptor: the next one in its chain

	heapStart, heap, heapEnd uint64
}

// New lays out a queue of size entries at base in mem: the descriptor table,
// then the avail ring, then the used ring (4-byte aligned). Memory from the
// end of the used ring to heapEnd is a bump heap for buffers and indirect
// tables. start is the initial avail and used idx (use it to test 16-bit
// wrap-around; give the queue the same value in Options.NextAvail/NextUsed).
func New(mem *guestmem.Memory, size uint16, base, heapEnd uint64, start uint16) *Driver {
	l := queue.Layout{Size: size, Desc: base}
	l.Avail = l.Desc + queue.DescBytes(size)
	l.Used = (l.Avail + queue.AvailBytes(size) + 3) &^ 3
	d := &Driver{Mem: mem, L: l, availIdx: start, lastUsed: start,
		chainLen: make([]uint16, size), nextOf: make([]uint16, size)}
	for i := int(size) - 1; i >= 0; i-- {
		d.free = append(d.free, uint16(i))
	}
	d.heapStart = (l.Used + queue.UsedBytes(size) + 15) &^ 15
	d.heap, d.heapEnd = d.heapStart, heapEnd
	must(mem.PutUint16(l.Avail+2, start))
	must(mem.PutUint16(l.Used+2, start))
	return d
}

func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("testdriver: %v", err))
	}
}

// Alloc returns n bytes of fresh guest memory aligned to align from the heap.
func (d *Driver) Alloc(n uint64, align uint64) uint64 {
	a := (d.heap + align - 1) &^ (align - 1)
	if a+n > d.heapEnd {
		panic("testdriver: heap exhausted")
	}
	d.heap = a + n
	return a
}

// ResetHeap forgets every Alloc.
func (d *Driver) ResetHeap() { d.heap = d.heapStart }

// HeapMark returns the heap position, for ReleaseTo.
func (d *Driver) HeapMark() uint64 { return d.heap }

// ReleaseTo forgets the Allocs made since HeapMark returned mark.
func (d *Driver) ReleaseTo(mark uint64) { d.heap = mark }

// WriteDescAt writes descriptor i of the table at gpa.
func (d *Driver) WriteDescAt(table uint64, i uint16, x Desc) {
	b, err := d.Mem.Slice(table+16*uint64(i), 16)
	must(err)
	binary.LittleEndian.PutUint64(b[0:], x.Addr)
	binary.LittleEndian.PutUint32(b[8:], x.Len)
	binary.LittleEndian.PutUint16(b[12:], x.Flags)
	binary.LittleEndian.PutUint16(b[14:], x.Next)
}

// WriteDesc writes descriptor i of the queue's table.
func (d *Driver) WriteDesc(i uint16, x Desc) { d.WriteDescAt(d.L.Desc, i, x) }

// FreeDescriptors returns how many table entries are free.
func (d *Driver) FreeDescriptors() int { return len(d.free) }

// Add writes segs as a chain of direct descriptors and makes it available.
// It returns the head, or false when the table lacks free entries.
func (d *Driver) Add(segs ...Seg) (uint16, bool) {
	n := len(segs)
	if n == 0 || n > len(d.free) {
		return 0, false
	}
	idx := d.free[len(d.free)-n:]
	for i, s := range segs {
		x := Desc{Addr: s.Addr, Len: s.Len}
		if s.Write {
			x.Flags |= FWrite
		}
		if i+1 < n {
			x.Flags |= FNext
			x.Next = idx[i+1]
			d.nextOf[idx[i]] = idx[i+1]
		}
		d.WriteDesc(idx[i], x)
	}
	head := idx[0]
	d.chainLen[head] = uint16(n)
	d.free = d.free[:len(d.free)-n]
	d.Publish(head)
	return head, true
}

// AddIndirect writes segs into an indirect table allocated from the heap and
// makes a chain of one INDIRECT descriptor available.
func (d *Driver) AddIndirect(segs ...Seg) (uint16, bool) {
	if len(segs) == 0 || len(d.free) == 0 {
		return 0, false
	}
	table := d.Alloc(16*uint64(len(segs)), 16)
	for i, s := range segs {
		x := Desc{Addr: s.Addr, Len: s.Len}
		if s.Write {
			x.Flags |= FWrite
		}
		if i+1 < len(segs) {
			x.Flags |= FNext
			x.Next = uint16(i + 1)
		}
		d.WriteDescAt(table, uint16(i), x)
	}
	head := d.free[len(d.free)-1]
	d.free = d.free[:len(d.free)-1]
	d.chainLen[head] = 1
	d.WriteDesc(head, Desc{Addr: table, Len: 16 * uint32(len(segs)), Flags: FIndirect})
	d.Publish(head)
	return head, true
}

// Publish puts head in the next avail ring slot and publishes the new avail
// idx (no descriptor bookkeeping: use it for hand-made hostile chains).
func (d *Driver) Publish(head uint16) {
	slot := uint64(d.availIdx % d.L.Size)
	must(d.Mem.PutUint16(d.L.Avail+4+2*slot, head))
	d.availIdx++
	must(d.Mem.StoreUint16Release(d.L.Avail+2, d.availIdx))
}

// SetAvailIdx writes the avail idx directly.
func (d *Driver) SetAvailIdx(v uint16) {
	d.availIdx = v
	must(d.Mem.StoreUint16Release(d.L.Avail+2, v))
}

// AvailIdx returns the avail idx the driver last published.
func (d *Driver) AvailIdx() uint16 { return d.availIdx }

// Used takes the next completion from the used ring and frees its
// descriptors; ok is false when the device has returned nothing new.
func (d *Driver) Used() (id, length uint32, ok bool) {
	idx, err := d.Mem.LoadUint16Acquire(d.L.Used + 2)
	must(err)
	if idx == d.lastUsed {
		return 0, 0, false
	}
	slot := uint64(d.lastUsed % d.L.Size)
	id, err = d.Mem.Uint32(d.L.Used + 4 + 8*slot)
	must(err)
	length, err = d.Mem.Uint32(d.L.Used + 4 + 8*slot + 4)
	must(err)
	d.lastUsed++
	if id < uint32(d.L.Size) {
		h := uint16(id)
		i := h
		for k := d.chainLen[h]; k > 0; k-- {
			d.free = append(d.free, i)
			i = d.nextOf[i]
		}
		d.chainLen[h] = 0
	}
	return id, length, true
}

// UsedIdx returns the used idx the device has published.
func (d *Driver) UsedIdx() uint16 {
	v, err := d.Mem.LoadUint16Acquire(d.L.Used + 2)
	must(err)
	return v
}

// SetUsedEvent writes used_event (the driver's interrupt threshold with
// VIRTIO_F_EVENT_IDX).
func (d *Driver) SetUsedEvent(v uint16) {
	must(d.Mem.PutUint16(d.L.Avail+4+2*uint64(d.L.Size), v))
}

// SetAvailFlags writes the avail ring flags (VIRTQ_AVAIL_F_NO_INTERRUPT).
func (d *Driver) SetAvailFlags(v uint16) { must(d.Mem.PutUint16(d.L.Avail, v)) }

// AvailEvent reads avail_event, the device's kick threshold.
func (d *Driver) AvailEvent() uint16 {
	v, err := d.Mem.Uint16(d.L.Used + 4 + 8*uint64(d.L.Size))
	must(err)
	return v
}

// UsedFlags reads the used ring flags (VIRTQ_USED_F_NO_NOTIFY).
func (d *Driver) UsedFlags() uint16 {
	v, err := d.Mem.Uint16(d.L.Used)
	must(err)
	return v
}

// NeedKick reports whether a driver that published avail idx up to now, from
// old, must notify the device.
func (d *Driver) NeedKick(old uint16) bool {
	guestmem.Fence()
	if d.EventIdx {
		return queue.NeedEvent(d.AvailEvent(), d.availIdx, old)
	}
	return d.UsedFlags()&queue.UsedFNoNotify == 0
}

// EnableInterrupts asks for an interrupt on the next completion, as a Linux
// driver does before it waits: used_event = the next used idx it expects
// (with VIRTIO_F_EVENT_IDX), else the NO_INTERRUPT flag cleared.
func (d *Driver) EnableInterrupts() {
	if d.EventIdx {
		d.SetUsedEvent(d.lastUsed)
		return
	}
	d.SetAvailFlags(0)
}
