package guestmem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapAnon maps size bytes of private anonymous memory whose host address
// is congruent to gpa modulo align (a power of two): KVM maps a huge page
// of guest memory as one only where the host and guest addresses agree in
// their low bits, and the kernel gives transparent huge pages only to
// aligned 2 MiB ranges. It maps size+align bytes and unmaps the excess at
// both ends. The result must be released with unmapAnon.
func mapAnon(size, gpa, align uint64, flags int) ([]byte, error) {
	total := size + align
	p, err := unix.MmapPtr(-1, 0, nil, uintptr(total), unix.PROT_READ|unix.PROT_WRITE, flags)
	if err != nil {
		return nil, err
	}
	base := uint64(uintptr(p))
	head := (gpa - base) & (align - 1) // the first address ≡ gpa (mod align)
	if head > 0 {
		if err := unix.MunmapPtr(p, uintptr(head)); err != nil {
			_ = unix.MunmapPtr(p, uintptr(total))
			return nil, err
		}
	}
	start := unsafe.Add(p, head)
	if tail := total - head - size; tail > 0 {
		if err := unix.MunmapPtr(unsafe.Add(start, size), uintptr(tail)); err != nil {
			_ = unix.MunmapPtr(start, uintptr(total-head))
			return nil, err
		}
	}
	return unsafe.Slice((*byte)(start), size), nil
}

// unmapAnon releases memory mapAnon returned.
func unmapAnon(b []byte) error {
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}
