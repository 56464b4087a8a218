package boot

import (
	"fmt"
	"io"

	"github.com/corral-vmm/corral/guestmem"
)

// placeInitrd returns the page-aligned address that puts size bytes as high
// as possible below limit (exclusive) without going below floor.
func placeInitrd(size, floor, limit uint64) (uint64, error) {
	if size > limit || alignDown(limit-size, pageSize) < floor {
		return 0, fmt.Errorf("%w: initrd of %d bytes does not fit between the kernel's end %#x and %#x",
			ErrNoRoom, size, floor, limit)
	}
	return alignDown(limit-size, pageSize), nil
}

// planInitrd returns where cfg's initrd (if any) goes in [floor, limit):
// 0 for none.
func planInitrd(cfg *Config, floor, limit uint64) (uint64, error) {
	if cfg.Initrd == nil || cfg.InitrdSize == 0 {
		return 0, nil
	}
	return placeInitrd(uint64(cfg.InitrdSize), floor, limit)
}

// loadInitrd copies cfg's initrd (if any) into guest memory at addr, from
// planInitrd; it returns the address and size (0, 0 for none).
func loadInitrd(mem *guestmem.Memory, cfg *Config, addr uint64) (uint64, uint64, error) {
	if cfg.Initrd == nil || cfg.InitrdSize == 0 {
		return 0, 0, nil
	}
	size := uint64(cfg.InitrdSize)
	dst, err := mem.Slice(addr, size)
	if err != nil {
		return 0, 0, fmt.Errorf("boot: initrd at %#x: %w", addr, err)
	}
	if err := readFull(cfg.Initrd, dst, 0); err != nil {
		return 0, 0, fmt.Errorf("boot: reading initrd (%d bytes): %w", size, err)
	}
	return addr, size, nil
}

// readInto copies n bytes of r at off into guest memory at gpa.
func readInto(mem *guestmem.Memory, r io.ReaderAt, off int64, gpa, n uint64) error {
	dst, err := mem.Slice(gpa, n)
	if err != nil {
		return err
	}
	return readFull(r, dst, off)
}

// alignDown rounds v down to a multiple of a (a power of two).
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }

// alignUp rounds v up to a multiple of a (a power of two); ok is false if
// that overflows.
func alignUp(v, a uint64) (uint64, bool) {
	r := (v + a - 1) &^ (a - 1)
	return r, r >= v
}
