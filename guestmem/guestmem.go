// Package guestmem is the one bounds-checked accessor for guest physical
// memory. Every read or write of guest RAM by the VMM goes through a Memory:
// addresses and lengths are checked with overflow-safe arithmetic against the
// RAM regions before any byte is touched.
package guestmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sort"
)

// ErrOutOfBounds is wrapped by every error for an access that is not wholly
// inside one RAM region (past RAM, in a hole, or wrapping around 2^64).
var ErrOutOfBounds = errors.New("guestmem: access outside guest RAM")

// Region is one contiguous range of guest RAM backed by host memory.
type Region struct {
	GPA  uint64 // guest physical address of Data[0]
	Data []byte // host backing; len(Data) is the region size
}

// End returns the first guest physical address past the region.
func (r Region) End() uint64 { return r.GPA + uint64(len(r.Data)) }

// Memory is guest RAM: a sorted set of non-overlapping regions. It is safe
// for concurrent use; it never changes after New.
type Memory struct {
	regions []Region
	size    uint64
	owned   bool // regions were mapped by Allocate and are unmapped by Close
	// unmap releases one owned region: Allocate's aligned mappings are
	// not known to unix.Munmap (see mapAnon).
	unmap func([]byte) error
}

// New checks that the regions are non-empty, do not wrap around the address
// space and do not overlap, and returns them as guest memory.
func New(regions ...Region) (*Memory, error) {
	rs := append([]Region(nil), regions...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].GPA < rs[j].GPA })
	var size uint64
	for i, r := range rs {
		if len(r.Data) == 0 {
			return nil, fmt.Errorf("guestmem: region at %#x is empty", r.GPA)
		}
		if _, carry := bits.Add64(r.GPA, uint64(len(r.Data)), 0); carry != 0 {
			return nil, fmt.Errorf("guestmem: region at %#x of %#x bytes wraps the address space", r.GPA, len(r.Data))
		}
		if i > 0 && rs[i-1].End() > r.GPA {
			return nil, fmt.Errorf("guestmem: region at %#x overlaps region at %#x", r.GPA, rs[i-1].GPA)
		}
		size += uint64(len(r.Data))
	}
	return &Memory{regions: rs, size: size}, nil
}

// Regions returns the RAM regions in address order. The caller must not
// modify the returned slice.
func (m *Memory) Regions() []Region { return m.regions }

// Size returns the total bytes of guest RAM.
func (m *Memory) Size() uint64 { return m.size }

// Slice returns the host bytes backing guest range [gpa, gpa+n). The range
// must lie wholly inside one region. The slice aliases guest memory: the guest
// may change it at any time, so read each field once and validate the copy.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	end, carry := bits.Add64(gpa, n, 0)
	if carry != 0 {
		return nil, fmt.Errorf("%w: %#x+%#x wraps the address space", ErrOutOfBounds, gpa, n)
	}
	// Find the last region starting at or below gpa. A VM has one to
	// three regions (RAM below and above the PCI hole): a scan from the
	// top beats a binary search's calls on every descriptor and ring
	// access.
	i := len(m.regions) - 1
	for i >= 0 && m.regions[i].GPA > gpa {
		i--
	}
	if i < 0 {
		return nil, fmt.Errorf("%w: [%#x, %#x) is below RAM", ErrOutOfBounds, gpa, end)
	}
	r := m.regions[i]
	if end > r.End() {
		return nil, fmt.Errorf("%w: [%#x, %#x) is past the RAM region [%#x, %#x)", ErrOutOfBounds, gpa, end, r.GPA, r.End())
	}
	off := gpa - r.GPA
	return r.Data[off : off+n : off+n], nil
}

// Contains reports whether [gpa, gpa+n) lies wholly inside one RAM region.
func (m *Memory) Contains(gpa, n uint64) bool {
	_, err := m.Slice(gpa, n)
	return err == nil
}

// ReadAt copies len(p) bytes from guest address gpa into p.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest memory at gpa.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Zero clears n bytes of guest memory at gpa.
func (m *Memory) Zero(gpa, n uint64) error {
	s, err := m.Slice(gpa, n)
	if err != nil {
		return err
	}
	clear(s)
	return nil
}

// Uint16 reads a little-endian uint16 at gpa.
func (m *Memory) Uint16(gpa uint64) (uint16, error) {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// Uint32 reads a little-endian uint32 at gpa.
func (m *Memory) Uint32(gpa uint64) (uint32, error) {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// Uint64 reads a little-endian uint64 at gpa.
func (m *Memory) Uint64(gpa uint64) (uint64, error) {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutUint16 writes a little-endian uint16 at gpa.
func (m *Memory) PutUint16(gpa uint64, v uint16) error {
	s, err := m.Slice(gpa, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutUint32 writes a little-endian uint32 at gpa.
func (m *Memory) PutUint32(gpa uint64, v uint32) error {
	s, err := m.Slice(gpa, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutUint64 writes a little-endian uint64 at gpa.
func (m *Memory) PutUint64(gpa uint64, v uint64) error {
	s, err := m.Slice(gpa, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}
