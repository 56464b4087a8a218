package snapshot

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/corral-vmm/corral/guestmem"
	"golang.org/x/sys/unix"
)

const (
	stateFile  = "state"
	memoryFile = "memory"
)

// Writer builds a snapshot in a temporary sibling directory of its target
// and renames it into place on Commit, so nothing is ever visible at the
// target until it is complete. A Writer is not safe for concurrent use.
type Writer struct {
	dir, tmp  string
	id        [IDSize]byte
	sections  []section
	names     map[string]bool
	stateSize int
	layout    []byte // set by WriteMemory
	done      bool   // committed or aborted
}

// Create starts a snapshot to be committed at dir. dir's parent must exist;
// dir must not, or be an empty directory (which Commit replaces).
func Create(dir string) (*Writer, error) {
	dir = filepath.Clean(dir)
	if fi, err := os.Lstat(dir); err == nil {
		if !fi.IsDir() {
			return nil, fmt.Errorf("snapshot %s: exists and is not a directory: %w", dir, fs.ErrExist)
		}
		f, err := os.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: %w", dir, err)
		}
		names, err := f.Readdirnames(1)
		f.Close()
		if len(names) > 0 {
			return nil, fmt.Errorf("snapshot %s: directory exists and is not empty: %w", dir, fs.ErrExist)
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("snapshot %s: %w", dir, err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("snapshot %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: temporary directory: %w", dir, err)
	}
	w := &Writer{dir: dir, tmp: tmp, names: map[string]bool{}, stateSize: hdrSize + trailerSize}
	if _, err := rand.Read(w.id[:]); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("snapshot %s: snapshot ID: %w", dir, err)
	}
	return w, nil
}

// ID returns the snapshot's random ID, which its memory file also carries.
func (w *Writer) ID() [IDSize]byte { return w.id }

// AddSection stores data (copied) under name: 1 to 64 bytes of
// [a-z0-9._-], unique, not "memory.layout"; data at most MaxSectionSize.
func (w *Writer) AddSection(name string, data []byte) error {
	if w.done {
		return fmt.Errorf("snapshot %s: AddSection %q after Commit or Abort", w.dir, name)
	}
	if err := checkName(name); err != nil {
		return fmt.Errorf("snapshot %s: %w", w.dir, err)
	}
	if name == layoutSection {
		return fmt.Errorf("snapshot %s: section name %q is reserved for the memory layout", w.dir, name)
	}
	return w.add(name, data)
}

func (w *Writer) add(name string, data []byte) error {
	if w.names[name] {
		return fmt.Errorf("snapshot %s: section %q added twice", w.dir, name)
	}
	if len(data) > MaxSectionSize {
		return fmt.Errorf("snapshot %s: section %q: %d bytes is over the %d byte limit", w.dir, name, len(data), MaxSectionSize)
	}
	reserve := 0 // keep a table entry for the memory layout
	if w.layout == nil && name != layoutSection {
		reserve = 1
	}
	if len(w.sections)+1+reserve > MaxSections {
		return fmt.Errorf("snapshot %s: section %q: more than %d sections with the memory layout", w.dir, name, MaxSections)
	}
	if n := w.stateSize + entSize + len(data); n > MaxStateSize {
		return fmt.Errorf("snapshot %s: section %q: state would be %d bytes, over the %d byte limit", w.dir, name, n, MaxStateSize)
	}
	w.sections = append(w.sections, section{name: name, data: bytes.Clone(data)})
	w.names[name] = true
	w.stateSize += entSize + len(data)
	return nil
}

// WriteMemory writes guest RAM to the memory file, once. The file is sized
// first, so only 4 KiB pages with a non-zero byte are written and zero pages
// stay holes. The guest must not run meanwhile.
func (w *Writer) WriteMemory(mem *guestmem.Memory) error {
	if w.done {
		return fmt.Errorf("snapshot %s: WriteMemory after Commit or Abort", w.dir)
	}
	if w.layout != nil {
		return fmt.Errorf("snapshot %s: WriteMemory called twice", w.dir)
	}
	path := filepath.Join(w.tmp, memoryFile)
	l := &layout{id: w.id}
	off := uint64(regionAlign) // the header lives in the first 2 MiB
	regions := mem.Regions()
	if len(regions) == 0 || len(regions) > maxRegions {
		return fmt.Errorf("snapshot %s: guest memory has %d regions, want 1 to %d", path, len(regions), maxRegions)
	}
	for _, r := range regions {
		size := uint64(len(r.Data))
		if size%pageSize != 0 || r.GPA%pageSize != 0 {
			return fmt.Errorf("snapshot %s: region [%#x, +%#x) is not 4 KiB aligned", path, r.GPA, size)
		}
		l.regions = append(l.regions, memRegion{gpa: r.GPA, size: size, offset: off})
		off = alignUp(off+size, regionAlign)
	}
	last := l.regions[len(l.regions)-1]
	l.fileSize = last.offset + last.size

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(int64(l.fileSize)); err != nil {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	if _, err := f.WriteAt(encodeMemHeader(w.id), 0); err != nil {
		return fmt.Errorf("snapshot %s: header: %w", path, err)
	}
	for i, r := range regions {
		lr := &l.regions[i]
		for c := uint64(0); c < lr.size; c += ChunkSize {
			data := r.Data[c:min(c+ChunkSize, lr.size)]
			ch, err := writeChunk(f, data, lr.offset+c)
			if err != nil {
				return fmt.Errorf("snapshot %s: chunk at guest address %#x: %w", path, r.GPA+c, err)
			}
			lr.chunks = append(lr.chunks, ch)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("snapshot %s: fsync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	enc := encodeLayout(l)
	if len(enc) > MaxSectionSize {
		return fmt.Errorf("snapshot %s: memory layout of %d bytes is over the %d byte section limit", path, len(enc), MaxSectionSize)
	}
	if err := w.add(layoutSection, enc); err != nil {
		return err
	}
	w.layout = enc
	return nil
}

// writeChunk writes the runs of non-zero pages of data at file offset off
// and returns the chunk's checksum record.
func writeChunk(f *os.File, data []byte, off uint64) (chunk, error) {
	var zero [pageSize]byte
	nonZero := false
	run := -1 // start of the current run of non-zero pages
	flush := func(end int) error {
		if run < 0 {
			return nil
		}
		_, err := f.WriteAt(data[run:end], int64(off)+int64(run))
		run = -1
		return err
	}
	for p := 0; p < len(data); p += pageSize {
		if bytes.Equal(data[p:p+pageSize], zero[:]) {
			if err := flush(p); err != nil {
				return chunk{}, err
			}
			continue
		}
		nonZero = true
		if run < 0 {
			run = p
		}
	}
	if err := flush(len(data)); err != nil {
		return chunk{}, err
	}
	if !nonZero {
		return chunk{zero: true}, nil
	}
	return chunk{crc: crc32.Checksum(data, castagnoli)}, nil
}

// Commit writes the state file, syncs both files and the directory, and
// renames the snapshot into place. WriteMemory must have been called. After
// a failed Commit, call Abort.
func (w *Writer) Commit() error {
	if w.done {
		return fmt.Errorf("snapshot %s: Commit after Commit or Abort", w.dir)
	}
	if w.layout == nil {
		return fmt.Errorf("snapshot %s: Commit before WriteMemory", w.dir)
	}
	path := filepath.Join(w.tmp, stateFile)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	_, err = f.Write(encodeState(&state{id: w.id, sections: w.sections}))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", path, err)
	}
	if err := syncDir(w.tmp); err != nil {
		return err
	}
	// rename(2) itself, not os.Rename, which refuses any existing
	// directory: the kernel replaces an empty one atomically and refuses a
	// non-empty one.
	if err := unix.Rename(w.tmp, w.dir); err != nil {
		return fmt.Errorf("snapshot %s: rename into place: %w", w.dir, err)
	}
	w.done = true
	return syncDir(filepath.Dir(w.dir))
}

// Abort removes the unfinished snapshot. It does nothing after Commit.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	_ = os.RemoveAll(w.tmp)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("snapshot: fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("snapshot: fsync directory %s: %w", dir, err)
	}
	return nil
}
