package pci

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"sync"
)

// ErrNoSpace: the allocator's window has no naturally aligned room left.
var ErrNoSpace = errors.New("no space left in the window")

// Allocator hands out naturally aligned ranges of a window (the MMIO hole
// for memory BARs, or an I/O port range for I/O BARs), lowest address first.
// It never frees: BARs are placed once, when the machine is built. It is
// safe for concurrent use.
type Allocator struct {
	mu   sync.Mutex
	base uint64
	last uint64 // last address of the window
	next uint64 // lowest free address
	full bool   // next has wrapped past last
}

// NewAllocator returns an allocator for the window [base, base+size). The
// window comes from the caller (for memory BARs: boot.MMIOBase, boot.MMIOSize).
func NewAllocator(base, size uint64) (*Allocator, error) {
	if size == 0 || base+(size-1) < base {
		return nil, fmt.Errorf("pci: allocator window base %#x size %#x is empty or wraps", base, size)
	}
	return &Allocator{base: base, last: base + size - 1, next: base}, nil
}

// Alloc returns the lowest free address aligned to size in the window, with
// size bytes free after it. size must be a power of two.
func (a *Allocator) Alloc(size uint64) (uint64, error) {
	if size == 0 || bits.OnesCount64(size) != 1 {
		return 0, fmt.Errorf("pci: allocate %#x bytes: size not a power of two", size)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.full {
		return 0, fmt.Errorf("pci: allocate %#x bytes: %w", size, ErrNoSpace)
	}
	addr := (a.next + (size - 1)) &^ (size - 1)
	if addr < a.next { // aligning wrapped
		return 0, fmt.Errorf("pci: allocate %#x bytes: %w", size, ErrNoSpace)
	}
	end := addr + (size - 1)
	if end < addr || end > a.last {
		return 0, fmt.Errorf("pci: allocate %#x bytes in [%#x, %#x]: %w", size, a.base, a.last, ErrNoSpace)
	}
	if end == ^uint64(0) {
		a.full = true
	} else {
		a.next = end + 1
	}
	if a.next > a.last {
		a.full = true
	}
	return addr, nil
}

// AssignBARs gives every declared BAR of c an address, as firmware would:
// memory BARs from mem, I/O BARs from io (which may be nil when c has none),
// largest first so that alignment wastes little. It does not enable decode
// in the command register; the caller does, with SetCommand, if it wants
// the BARs live before the guest's driver enables them.
func AssignBARs(c *ConfigSpace, mem, io *Allocator) error {
	type bar struct {
		index int
		b     BAR
	}
	var bs []bar
	for i := 0; i < barCountStandard; i++ {
		if b := c.BAR(i); b.Kind != BARNone {
			bs = append(bs, bar{i, b})
		}
	}
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].b.Size > bs[j].b.Size })
	for _, x := range bs {
		a := mem
		if x.b.Kind == BARIO {
			a = io
		}
		if a == nil {
			return fmt.Errorf("pci: BAR %d (%v): no allocator for its space", x.index, x.b.Kind)
		}
		addr, err := a.Alloc(x.b.Size)
		if err != nil {
			return fmt.Errorf("pci: BAR %d (%v, %#x bytes): %w", x.index, x.b.Kind, x.b.Size, err)
		}
		if x.b.Kind == BARMem32 && addr+(x.b.Size-1) > 0xffff_ffff {
			return fmt.Errorf("pci: BAR %d: window gave %#x, above 4 GiB for a 32-bit BAR: %w", x.index, addr, ErrNoSpace)
		}
		if err := c.SetBARAddress(x.index, addr); err != nil {
			return err
		}
	}
	return nil
}
