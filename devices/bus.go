package devices

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Errors returned by Bus mutations; callers may branch on them with errors.Is.
var (
	// ErrOverlap: the range overlaps a device already on the bus.
	ErrOverlap = errors.New("range overlaps a device on the bus")
	// ErrBadRange: zero size, or base+size wraps past the top of the address space.
	ErrBadRange = errors.New("bad range")
	// ErrNotFound: no device was inserted at that base.
	ErrNotFound = errors.New("no device at that base")
)

// Bus routes accesses in one address space (port I/O or MMIO) to the
// devices inserted on it, by address range. The same type serves both.
//
// Lookups are lock-free: the bus keeps a sorted slice of ranges that is
// replaced, never modified, on Insert/Remove/Move and read through an
// atomic pointer, so any number of vCPU goroutines may call Read and Write
// while another goroutine moves a PCI BAR. Mutations are serialised by a
// mutex. The zero Bus is empty and ready to use.
type Bus struct {
	mu      sync.Mutex // serialises Insert, Remove, Move
	entries atomic.Pointer[[]busEntry]
}

type busEntry struct {
	base, size uint64
	name       string
	dev        Device
}

// last is the entry's last address; base+size-1 never wraps (Insert checks).
func (e *busEntry) last() uint64 { return e.base + e.size - 1 }

// Range is one device's place on a bus, as returned by Bus.Ranges.
type Range struct {
	Base, Size uint64
	Name       string
}

func (b *Bus) snapshot() []busEntry {
	if p := b.entries.Load(); p != nil {
		return *p
	}
	return nil
}

// checkRange refuses a zero size and ranges that wrap past 2^64.
func checkRange(base, size uint64) error {
	if size == 0 {
		return fmt.Errorf("devices: base %#x size 0: %w", base, ErrBadRange)
	}
	if base+(size-1) < base {
		return fmt.Errorf("devices: base %#x size %#x wraps: %w", base, size, ErrBadRange)
	}
	return nil
}

// overlapping returns the index of an entry in es (other than skip) that
// overlaps [base, base+size), or -1.
func overlapping(es []busEntry, base, size uint64, skip int) int {
	last := base + size - 1
	for i := range es {
		if i != skip && es[i].base <= last && base <= es[i].last() {
			return i
		}
	}
	return -1
}

// Insert places d at [base, base+size). It refuses a zero size, a range that
// wraps past the top of the address space and a range overlapping another
// device. name appears in errors and in Ranges.
func (b *Bus) Insert(base, size uint64, name string, d Device) error {
	if err := checkRange(base, size); err != nil {
		return fmt.Errorf("devices: insert %s: %w", name, err)
	}
	if d == nil {
		return fmt.Errorf("devices: insert %s at %#x: nil device", name, base)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.snapshot()
	if i := overlapping(old, base, size, -1); i >= 0 {
		return fmt.Errorf("devices: insert %s at [%#x, %#x]: %w (%s at [%#x, %#x])",
			name, base, base+size-1, ErrOverlap, old[i].name, old[i].base, old[i].last())
	}
	es := make([]busEntry, 0, len(old)+1)
	es = append(es, old...)
	es = append(es, busEntry{base: base, size: size, name: name, dev: d})
	sortEntries(es)
	b.entries.Store(&es)
	return nil
}

// Remove takes the device inserted at base off the bus.
func (b *Bus) Remove(base uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.snapshot()
	i := indexOfBase(old, base)
	if i < 0 {
		return fmt.Errorf("devices: remove at %#x: %w", base, ErrNotFound)
	}
	es := make([]busEntry, 0, len(old)-1)
	es = append(es, old[:i]...)
	es = append(es, old[i+1:]...)
	b.entries.Store(&es)
	return nil
}

// Move moves the device inserted at oldBase to newBase, keeping its size,
// in one step: concurrent lookups see it at the old place or the new one.
// It refuses a new range that wraps or overlaps another device; the device
// then stays where it was. This is what a PCI BAR reprogram needs.
func (b *Bus) Move(oldBase, newBase uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.snapshot()
	i := indexOfBase(old, oldBase)
	if i < 0 {
		return fmt.Errorf("devices: move from %#x: %w", oldBase, ErrNotFound)
	}
	e := old[i]
	if err := checkRange(newBase, e.size); err != nil {
		return fmt.Errorf("devices: move %s: %w", e.name, err)
	}
	if j := overlapping(old, newBase, e.size, i); j >= 0 {
		return fmt.Errorf("devices: move %s to [%#x, %#x]: %w (%s at [%#x, %#x])",
			e.name, newBase, newBase+e.size-1, ErrOverlap, old[j].name, old[j].base, old[j].last())
	}
	es := append([]busEntry(nil), old...)
	es[i].base = newBase
	sortEntries(es)
	b.entries.Store(&es)
	return nil
}

// Ranges lists the devices on the bus in address order.
func (b *Bus) Ranges() []Range {
	es := b.snapshot()
	rs := make([]Range, len(es))
	for i, e := range es {
		rs[i] = Range{Base: e.base, Size: e.size, Name: e.name}
	}
	return rs
}

// find returns the device covering all of [addr, addr+n) and the offset of
// addr in it. Accesses that start in a device but run past its end, and
// lengths other than 1, 2, 4 and 8, find nothing.
func (b *Bus) find(addr uint64, n int) (Device, uint64, bool) {
	switch n {
	case 1, 2, 4, 8:
	default:
		return nil, 0, false
	}
	es := b.snapshot()
	// The first entry whose last address is >= addr; entries do not overlap,
	// so it is the only candidate.
	i := sort.Search(len(es), func(i int) bool { return es[i].last() >= addr })
	if i == len(es) || es[i].base > addr {
		return nil, 0, false
	}
	e := &es[i]
	off := addr - e.base
	if uint64(n)-1 > e.size-1-off { // off+n > size, without overflow
		return nil, 0, false
	}
	return e.dev, off, true
}

// Read dispatches a guest read of len(data) bytes at addr. It returns false,
// leaving data untouched, when no device covers the whole access (nothing
// there, the access straddles a device's end, or len(data) is not 1, 2, 4 or
// 8); the caller then logs and fills data with 0xff.
func (b *Bus) Read(addr uint64, data []byte) bool {
	d, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	d.Read(off, data)
	return true
}

// Write dispatches a guest write of data at addr. It returns false when no
// device covers the whole access, as for Read; the write is then dropped.
func (b *Bus) Write(addr uint64, data []byte) bool {
	d, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	d.Write(off, data)
	return true
}

func indexOfBase(es []busEntry, base uint64) int {
	for i := range es {
		if es[i].base == base {
			return i
		}
	}
	return -1
}

func sortEntries(es []busEntry) {
	sort.Slice(es, func(i, j int) bool { return es[i].base < es[j].base })
}
