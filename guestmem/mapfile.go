package guestmem

import (
	"fmt"
	"math/bits"
	"os"

	"golang.org/x/sys/unix"
)

// FileRange is a guest physical range backed by Size bytes of a file
// starting at file offset Offset.
type FileRange struct {
	GPA    uint64
	Size   uint64
	Offset uint64
}

// maxRegion bounds one region as Allocate does (2^46 bytes: 64 TiB).
const maxRegion = 1 << 46

// MapFile maps each range of f copy-on-write (MAP_PRIVATE|MAP_NORESERVE,
// readable and writable) and returns it as guest memory that Close unmaps.
// Guest writes go to private anonymous pages: the file never changes, and
// many maps of one file share its page cache. Nothing of the file is read
// here; pages fault in on first touch. Sizes and offsets must be page
// aligned and every range must lie inside the file: a mapping past EOF would
// raise SIGBUS on access instead of an error. f may be closed afterwards.
func MapFile(f *os.File, ranges []FileRange) (*Memory, error) {
	if f == nil {
		return nil, fmt.Errorf("guestmem: MapFile: nil file")
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("guestmem: map %s: %w", f.Name(), err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("guestmem: map %s: not a regular file (%s)", f.Name(), st.Mode().Type())
	}
	fileSize := uint64(st.Size())
	page := uint64(unix.Getpagesize())
	for _, r := range ranges {
		if r.Size == 0 || r.Size%page != 0 {
			return nil, fmt.Errorf("guestmem: map %s: range at %#x: size %#x is not a positive multiple of the page size", f.Name(), r.GPA, r.Size)
		}
		if r.Size > maxRegion {
			return nil, fmt.Errorf("guestmem: map %s: range at %#x: size %#x is too large", f.Name(), r.GPA, r.Size)
		}
		if r.Offset%page != 0 {
			return nil, fmt.Errorf("guestmem: map %s: range at %#x: file offset %#x is not page aligned", f.Name(), r.GPA, r.Offset)
		}
		end, carry := bits.Add64(r.Offset, r.Size, 0)
		if carry != 0 || end > fileSize {
			return nil, fmt.Errorf("guestmem: map %s: range at %#x: file bytes [%#x, %#x+%#x) are past the file's end %#x", f.Name(), r.GPA, r.Offset, r.Offset, r.Size, fileSize)
		}
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("guestmem: map %s: %w", f.Name(), err)
	}
	var regions []Region
	release := func() {
		for _, r := range regions {
			_ = unix.Munmap(r.Data)
		}
	}
	for _, r := range ranges {
		var b []byte
		var merr error
		if err := rc.Control(func(fd uintptr) {
			b, merr = unix.Mmap(int(fd), int64(r.Offset), int(r.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
		}); err != nil {
			merr = err
		}
		if merr != nil {
			release()
			return nil, fmt.Errorf("guestmem: mmap %s bytes [%#x, %#x+%#x) for guest RAM at %#x: %w", f.Name(), r.Offset, r.Offset, r.Size, r.GPA, merr)
		}
		regions = append(regions, Region{GPA: r.GPA, Data: b})
	}
	m, err := New(regions...)
	if err != nil {
		release()
		return nil, err
	}
	m.owned, m.unmap = true, unix.Munmap
	return m, nil
}
