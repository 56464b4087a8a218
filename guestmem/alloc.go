package guestmem

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Range is a guest physical range to back with fresh anonymous host memory.
type Range struct {
	GPA  uint64
	Size uint64
}

// HugePageSize is the alignment Allocate gives guest RAM: each range's host
// address agrees with its guest address modulo 2 MiB, and the ranges are
// madvise(MADV_HUGEPAGE)d, so that the kernel backs them with transparent
// huge pages and KVM maps them with 2 MiB pages (one TLB entry and a
// shorter two-dimensional page walk per 2 MiB instead of per 4 KiB).
const HugePageSize = 2 << 20

// Allocate maps zeroed, private anonymous host memory for each range and
// returns it as guest memory that Close releases. Pages are reserved lazily
// (MAP_NORESERVE), so untouched guest RAM costs no host memory (though a
// touched page may bring in a whole huge page: see HugePageSize).
func Allocate(ranges ...Range) (*Memory, error) {
	var regions []Region
	release := func() {
		for _, r := range regions {
			_ = unmapAnon(r.Data)
		}
	}
	for _, r := range ranges {
		if r.Size == 0 || r.Size%uint64(unix.Getpagesize()) != 0 {
			release()
			return nil, fmt.Errorf("guestmem: range at %#x: size %#x is not a positive multiple of the page size", r.GPA, r.Size)
		}
		if r.Size > 1<<46 {
			release()
			return nil, fmt.Errorf("guestmem: range at %#x: size %#x is too large", r.GPA, r.Size)
		}
		b, err := mapAnon(r.Size, r.GPA, HugePageSize, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			release()
			return nil, fmt.Errorf("guestmem: mmap %d bytes for guest RAM at %#x: %w", r.Size, r.GPA, err)
		}
		regions = append(regions, Region{GPA: r.GPA, Data: b})
		// As QEMU and Cloud Hypervisor do: huge pages where the host
		// allows them (THP "always" or "madvise"), so KVM maps guest RAM
		// with 2 MiB nested pages. EINVAL (a kernel without THP) leaves
		// 4 KiB pages, which work.
		_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	}
	m, err := New(regions...)
	if err != nil {
		release()
		return nil, err
	}
	m.owned, m.unmap = true, unmapAnon
	return m, nil
}

// Close unmaps memory that Allocate mapped. It is a no-op for memory made by
// New from caller-owned slices. The Memory must not be used afterwards.
func (m *Memory) Close() error {
	if !m.owned {
		return nil
	}
	m.owned = false
	var errs []error
	for _, r := range m.regions {
		if err := m.unmap(r.Data); err != nil {
			errs = append(errs, fmt.Errorf("guestmem: munmap region at %#x: %w", r.GPA, err))
		}
	}
	m.regions = nil
	return errors.Join(errs...)
}
