package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/corral-vmm/corral/guestmem"
	"golang.org/x/sys/unix"
)

// Snapshot is an opened, verified snapshot directory. Open checks the whole
// state file and the memory file's size and identity; the memory's bytes are
// checked only by VerifyMemory, so that restore time does not grow with
// guest RAM.
type Snapshot struct {
	dir      string
	memPath  string
	st       *state
	lay      *layout
	mem      *os.File
	sections map[string][]byte
}

// openRegular opens path for reading and checks it is a regular file.
// O_NONBLOCK keeps a FIFO planted at path from blocking the open.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("snapshot %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("snapshot %s: not a regular file (%s)", path, fi.Mode().Type())
	}
	return f, fi, nil
}

// Open reads and verifies the snapshot at dir: the state file's magic,
// version (ErrVersion for any but Version), section table, every section's
// CRC32C and the SHA-256 trailer; the memory layout; and that the memory
// file is a regular file of the layout's size carrying this snapshot's ID.
// Errors name the file and what is wrong, and wrap ErrCorrupt or ErrVersion.
func Open(dir string) (*Snapshot, error) {
	dir = filepath.Clean(dir)
	statePath := filepath.Join(dir, stateFile)
	f, fi, err := openRegular(statePath)
	if err != nil {
		return nil, err
	}
	if fi.Size() > MaxStateSize {
		f.Close()
		return nil, fmt.Errorf("snapshot %s: %w", statePath, corruptf("size %d bytes is over the %d byte limit", fi.Size(), MaxStateSize))
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxStateSize+1))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", statePath, err)
	}
	st, lay, err := parseAll(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", statePath, err)
	}

	memPath := filepath.Join(dir, memoryFile)
	mem, fi, err := openRegular(memPath)
	if err != nil {
		return nil, err
	}
	if uint64(fi.Size()) != lay.fileSize {
		mem.Close()
		return nil, fmt.Errorf("snapshot %s: %w", memPath, corruptf("size %d bytes, layout wants %d", fi.Size(), lay.fileSize))
	}
	hdr := make([]byte, memHdrSize)
	if _, err := mem.ReadAt(hdr, 0); err != nil {
		mem.Close()
		return nil, fmt.Errorf("snapshot %s: header: %w", memPath, err)
	}
	if err := checkMemHeader(hdr, st.id); err != nil {
		mem.Close()
		return nil, fmt.Errorf("snapshot %s: %w", memPath, err)
	}
	s := &Snapshot{dir: dir, memPath: memPath, st: st, lay: lay, mem: mem, sections: map[string][]byte{}}
	for _, sec := range st.sections {
		s.sections[sec.name] = sec.data
	}
	return s, nil
}

// parseAll parses a state file and its memory layout section, and checks the
// two carry the same snapshot ID.
func parseAll(b []byte) (*state, *layout, error) {
	st, err := parseState(b)
	if err != nil {
		return nil, nil, err
	}
	var lb []byte
	found := false
	for _, s := range st.sections {
		if s.name == layoutSection {
			lb, found = s.data, true
		}
	}
	if !found {
		return nil, nil, corruptf("no %q section", layoutSection)
	}
	lay, err := parseLayout(lb)
	if err != nil {
		return nil, nil, fmt.Errorf("section %q: %w", layoutSection, err)
	}
	if lay.id != st.id {
		return nil, nil, fmt.Errorf("section %q: %w", layoutSection, corruptf("snapshot ID %x, the header's is %x", lay.id, st.id))
	}
	return st, lay, nil
}

// ID returns the snapshot's random ID.
func (s *Snapshot) ID() [IDSize]byte { return s.st.id }

// Sections returns the names of the caller's sections in the order they
// were added (the memory layout is the container's own and not listed).
func (s *Snapshot) Sections() []string {
	var names []string
	for _, sec := range s.st.sections {
		if sec.name != layoutSection {
			names = append(names, sec.name)
		}
	}
	return names
}

// Section returns a copy of the named section's bytes; the error wraps
// ErrNoSection when the snapshot has none of that name.
func (s *Snapshot) Section(name string) ([]byte, error) {
	b, ok := s.sections[name]
	if !ok || name == layoutSection {
		return nil, fmt.Errorf("snapshot %s: section %q: %w", s.dir, name, ErrNoSection)
	}
	return bytes.Clone(b), nil
}

// MemoryRanges returns where each guest RAM region lies in the memory file.
func (s *Snapshot) MemoryRanges() []guestmem.FileRange {
	rs := make([]guestmem.FileRange, len(s.lay.regions))
	for i, r := range s.lay.regions {
		rs[i] = guestmem.FileRange{GPA: r.gpa, Size: r.size, Offset: r.offset}
	}
	return rs
}

// MapMemory maps the memory file copy-on-write at the saved guest addresses
// (guestmem.MapFile): nothing is read, so its cost does not grow with guest
// RAM, and the file never changes. Each call gives an independent Memory
// whose Close unmaps it; maps outlive Close of the Snapshot.
func (s *Snapshot) MapMemory() (*guestmem.Memory, error) {
	m, err := guestmem.MapFile(s.mem, s.MemoryRanges())
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", s.memPath, err)
	}
	return m, nil
}

// VerifyMemory checks every chunk of the memory file against the layout's
// CRC32C. Chunks that are wholly holes (SEEK_DATA) are not read: they are
// zero, as chunks flagged all-zero must be. The error for the first bad chunk
// names its guest address and wraps ErrCorrupt.
func (s *Snapshot) VerifyMemory() error {
	buf := make([]byte, ChunkSize)
	for _, r := range s.lay.regions {
		for j, ch := range r.chunks {
			start := r.offset + uint64(j)*ChunkSize
			n := min(uint64(ChunkSize), r.size-uint64(j)*ChunkSize)
			gpa := r.gpa + uint64(j)*ChunkSize
			hole, err := s.isHole(start, n)
			if err != nil {
				return fmt.Errorf("snapshot %s: chunk at guest address %#x: %w", s.memPath, gpa, err)
			}
			if hole && ch.zero {
				continue
			}
			b := buf[:n]
			if _, err := s.mem.ReadAt(b, int64(start)); err != nil {
				return fmt.Errorf("snapshot %s: chunk at guest address %#x: %w", s.memPath, gpa, err)
			}
			ok := false
			if ch.zero {
				ok = isZero(b)
			} else {
				ok = crc32.Checksum(b, castagnoli) == ch.crc
			}
			if !ok {
				return fmt.Errorf("snapshot %s: %w", s.memPath, corruptf("chunk at guest address %#x: checksum mismatch", gpa))
			}
		}
	}
	return nil
}

// isHole reports whether file bytes [off, off+n) hold no data extent. A file
// system without SEEK_DATA reports data, so the chunk is read.
func (s *Snapshot) isHole(off, n uint64) (bool, error) {
	var d int64
	var serr error
	rc, err := s.mem.SyscallConn()
	if err != nil {
		return false, err
	}
	if err := rc.Control(func(fd uintptr) {
		d, serr = unix.Seek(int(fd), int64(off), unix.SEEK_DATA)
	}); err != nil {
		return false, err
	}
	switch {
	case errors.Is(serr, unix.ENXIO): // no data at or after off
		return true, nil
	case serr != nil:
		return false, nil
	}
	return uint64(d) >= off+n, nil
}

func isZero(b []byte) bool {
	var zero [pageSize]byte
	for len(b) > 0 {
		n := min(len(b), pageSize)
		if !bytes.Equal(b[:n], zero[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// Close closes the memory file. Memory from MapMemory stays mapped.
func (s *Snapshot) Close() error {
	if err := s.mem.Close(); err != nil {
		return fmt.Errorf("snapshot %s: %w", s.memPath, err)
	}
	return nil
}
