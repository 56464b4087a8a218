package guestmem

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// word32 returns the naturally aligned 32-bit word holding the aligned
// uint16 at gpa, and the bit shift of the uint16 within it, when that word
// lies inside one RAM region.
func (m *Memory) word32(gpa uint64) (*uint32, uint, error) {
	if gpa%2 != 0 {
		return nil, 0, fmt.Errorf("%w: unaligned 16-bit atomic access at %#x", ErrOutOfBounds, gpa)
	}
	if _, err := m.Slice(gpa, 2); err != nil {
		return nil, 0, err
	}
	base := gpa &^ 3
	s, err := m.Slice(base, 4)
	if err != nil {
		return nil, 0, err
	}
	p := unsafe.Pointer(&s[0])
	if uintptr(p)%4 != 0 {
		return nil, 0, fmt.Errorf("%w: host memory for %#x is not 4-byte aligned", ErrOutOfBounds, gpa)
	}
	return (*uint32)(p), uint(gpa-base) * 8, nil
}

// LoadUint16Acquire reads the uint16 at gpa (2-byte aligned) with acquire
// ordering: later reads of guest memory are not moved before it. Virtqueue
// index reads use it. The aligned 32-bit word around it must be guest RAM.
func (m *Memory) LoadUint16Acquire(gpa uint64) (uint16, error) {
	w, shift, err := m.word32(gpa)
	if err != nil {
		return 0, err
	}
	return uint16(atomic.LoadUint32(w) >> shift), nil
}

// StoreUint16Release writes v at gpa (2-byte aligned) with release ordering:
// earlier writes to guest memory are visible before it. Used-ring index
// updates use it. The other half of the aligned 32-bit word is left as the
// guest has it, even if the guest changes it concurrently.
func (m *Memory) StoreUint16Release(gpa uint64, v uint16) error {
	w, shift, err := m.word32(gpa)
	if err != nil {
		return err
	}
	mask := uint32(0xffff) << shift
	for i := 0; i < 64; i++ {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, old&^mask|uint32(v)<<shift) {
			return nil
		}
	}
	// A guest rewriting the other half without pause cannot stall the
	// device: on x86 an aligned 16-bit store is atomic, and the fences
	// give it release ordering.
	Fence()
	*(*uint16)(unsafe.Add(unsafe.Pointer(w), shift/8)) = v
	Fence()
	return nil
}

// Fence is a full memory barrier between guest-memory accesses, as virtio's
// event-index checks need between publishing the used index and reading the
// driver's event index. (A locked read-modify-write on x86.)
func Fence() {
	var w atomic.Uint32
	w.Add(0)
}
