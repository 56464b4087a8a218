package guestmem

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

// aligned16 returns a pointer to the naturally aligned uint16 at gpa.
func (m *Memory) aligned16(gpa uint64) (*uint16, error) {
	if gpa%2 != 0 {
		return nil, fmt.Errorf("%w: unaligned 16-bit atomic access at %#x", ErrOutOfBounds, gpa)
	}
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return nil, err
	}
	return (*uint16)(unsafe.Pointer(&s[0])), nil
}

// LoadUint16Acquire reads the uint16 at gpa (2-byte aligned) with acquire
// ordering: later reads of guest memory are not moved before it. Virtqueue
// index reads use it.
func (m *Memory) LoadUint16Acquire(gpa uint64) (uint16, error) {
	p, err := m.aligned16(gpa)
	if err != nil {
		return 0, err
	}
	// Go has no 16-bit atomics; on x86 an aligned 16-bit load is atomic and
	// the fence below orders it (TSO plus a compiler barrier).
	v := *(*uint16)(unsafe.Pointer(p))
	fence()
	return v, nil
}

// StoreUint16Release writes v at gpa (2-byte aligned) with release ordering:
// earlier writes to guest memory are visible before it. Used-ring index
// updates use it.
func (m *Memory) StoreUint16Release(gpa uint64, v uint16) error {
	p, err := m.aligned16(gpa)
	if err != nil {
		return err
	}
	fence()
	*(*uint16)(unsafe.Pointer(p)) = v
	fence()
	return nil
}

// fence is a full memory barrier: a locked read-modify-write on x86, which
// the compiler also treats as a barrier.
func fence() {
	var w atomic.Uint32
	w.Add(0)
}

// Fence is a full memory barrier between guest-memory accesses, as virtio's
// event-index checks need between publishing the used index and reading the
// driver's event index.
func Fence() { fence() }
