package snapshot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

// smallSnapshot commits a snapshot of one 8 KiB region with testSections
// and returns its directory.
func smallSnapshot(t *testing.T) string {
	t.Helper()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0x100000, Size: 8192})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	mem.WriteAt([]byte("hello"), 0x100010)
	dir := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, dir, mem)
	return dir
}

// openErr opens dir and checks it fails with a one-line error that names
// file and wraps ErrCorrupt or ErrVersion.
func openErr(t *testing.T, dir, file, what string) error {
	t.Helper()
	s, err := Open(dir)
	if err == nil {
		s.Close()
		t.Fatalf("%s: Open succeeded", what)
	}
	prefix := "snapshot " + filepath.Join(dir, file) + ": "
	if !strings.HasPrefix(err.Error(), prefix) || strings.Contains(err.Error(), "\n") {
		t.Fatalf("%s: error %q is not one line starting %q", what, err, prefix)
	}
	if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
		t.Fatalf("%s: error %q wraps neither ErrCorrupt nor ErrVersion", what, err)
	}
	return err
}

// TestStateEveryTruncationAndFlip truncates the state file at every length
// and flips every byte (three ways): Open must fail every time.
func TestStateEveryTruncationAndFlip(t *testing.T) {
	dir := smallSnapshot(t)
	path := filepath.Join(dir, stateFile)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("state file: %d bytes", len(orig))
	for n := 0; n < len(orig); n++ {
		if err := os.WriteFile(path, orig[:n], 0o600); err != nil {
			t.Fatal(err)
		}
		openErr(t, dir, stateFile, "truncated")
	}
	for i := range orig {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			b := append([]byte(nil), orig...)
			b[i] ^= x
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			openErr(t, dir, stateFile, "flipped")
		}
	}
	// Appended bytes too.
	os.WriteFile(path, append(append([]byte(nil), orig...), 0), 0o600)
	openErr(t, dir, stateFile, "appended")
	os.WriteFile(path, orig, 0o600)
	if s, err := Open(dir); err != nil {
		t.Fatalf("restored state: %v", err)
	} else {
		s.Close()
	}
}

// sectionOffset returns where the named section's data starts in a state
// file.
func sectionOffset(t *testing.T, b []byte, name string) int {
	t.Helper()
	st, err := parseState(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range st.sections {
		if s.name == name {
			return int(binary.LittleEndian.Uint64(b[hdrSize+i*entSize+entOffset:]))
		}
	}
	t.Fatalf("no section %q", name)
	return 0
}

func TestStateErrors(t *testing.T) {
	dir := smallSnapshot(t)
	path := filepath.Join(dir, stateFile)
	orig, _ := os.ReadFile(path)
	edit := func(f func(b []byte)) {
		b := append([]byte(nil), orig...)
		f(b)
		os.WriteFile(path, b, 0o600)
	}
	edit(func(b []byte) { binary.LittleEndian.PutUint32(b[hdrVersion:], 2) })
	err := openErr(t, dir, stateFile, "version 2")
	if want := "snapshot " + path + ": format version 2, this corral reads version 1"; err.Error() != want || !errors.Is(err, ErrVersion) {
		t.Errorf("version 2: err = %q, want %q wrapping ErrVersion", err, want)
	}
	edit(func(b []byte) { b[sectionOffset(t, orig, "vcpu.1")+3] ^= 1 })
	err = openErr(t, dir, stateFile, "section flip")
	if want := "snapshot " + path + `: section "vcpu.1": checksum mismatch`; err.Error() != want {
		t.Errorf("section flip: err = %q, want %q", err, want)
	}
	edit(func(b []byte) { b[len(b)-1] ^= 1 })
	err = openErr(t, dir, stateFile, "trailer flip")
	if !strings.HasSuffix(err.Error(), ": trailer checksum mismatch") {
		t.Errorf("trailer flip: err = %q", err)
	}
	edit(func(b []byte) { binary.LittleEndian.PutUint32(b[hdrSections:], 5000) })
	err = openErr(t, dir, stateFile, "count")
	if !strings.HasSuffix(err.Error(), ": section count 5000 is over the limit of 1024") {
		t.Errorf("count: err = %q", err)
	}
	os.WriteFile(path, []byte("not a snapshot at all"), 0o600)
	openErr(t, dir, stateFile, "magic")

	// A state file that is not a regular file.
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("FIFO state: err = %v", err)
	}
	os.Remove(path)
	if _, err := Open(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing state: err = %v", err)
	}
}

func TestMemoryFileErrors(t *testing.T) {
	dir := smallSnapshot(t)
	path := filepath.Join(dir, memoryFile)
	fi, _ := os.Stat(path)
	orig, _ := os.ReadFile(path)

	os.Truncate(path, 1000)
	err := openErr(t, dir, memoryFile, "short")
	if want := "snapshot " + path + ": size 1000 bytes, layout wants " + fmt.Sprint(fi.Size()); err.Error() != want {
		t.Errorf("short memory: err = %q, want %q", err, want)
	}
	os.WriteFile(path, orig, 0o600)

	// The memory file of another snapshot of the same layout is refused.
	other := smallSnapshot(t)
	otherMem, _ := os.ReadFile(filepath.Join(other, memoryFile))
	os.WriteFile(path, otherMem, 0o600)
	err = openErr(t, dir, memoryFile, "other snapshot's memory")
	if !strings.Contains(err.Error(), "the memory file belongs to another snapshot") {
		t.Errorf("other snapshot's memory: err = %q", err)
	}
	b := append([]byte(nil), orig...)
	b[2] ^= 1
	os.WriteFile(path, b, 0o600)
	openErr(t, dir, memoryFile, "memory magic")

	os.Remove(path)
	os.Mkdir(path, 0o700)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory as memory: err = %v", err)
	}
	os.Remove(path)
	if _, err := Open(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing memory: err = %v", err)
	}
}

// TestVerifyMemory flips a byte in a data chunk and in an all-zero chunk
// (a hole): Open still succeeds (it does not read memory), VerifyMemory names
// the chunk.
func TestVerifyMemory(t *testing.T) {
	mem := testMemory(t)
	dir := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, dir, mem)
	path := filepath.Join(dir, memoryFile)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ranges := s.MemoryRanges()
	s.Close()
	for _, c := range []struct {
		gpa  uint64 // byte to flip
		want uint64 // chunk reported
	}{
		{0x200000 + 4096 + 7, 0x200000}, // data chunk
		{0x100000, 0},                   // zero chunk 0
		{0x400000 + 8191, 0x400000},     // short last chunk, zero
		{1<<32 + 8192, 1 << 32},         // second region's data
		{1<<32 + 2<<20 - 1, 1 << 32},    // its last byte (zero page, data chunk)
	} {
		var off int64 = -1
		for _, r := range ranges {
			if c.gpa >= r.GPA && c.gpa < r.GPA+r.Size {
				off = int64(r.Offset + c.gpa - r.GPA)
			}
		}
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		var b [1]byte
		f.ReadAt(b[:], off)
		b[0] ^= 0x40
		f.WriteAt(b[:], off)
		s, err := Open(dir)
		if err != nil {
			t.Fatalf("flip at %#x: Open: %v", c.gpa, err)
		}
		err = s.VerifyMemory()
		want := "snapshot " + path + fmt.Sprintf(": chunk at guest address %#x: checksum mismatch", c.want)
		if err == nil || err.Error() != want || !errors.Is(err, ErrCorrupt) {
			t.Errorf("flip at %#x: VerifyMemory = %v, want %q", c.gpa, err, want)
		}
		s.Close()
		b[0] ^= 0x40
		f.WriteAt(b[:], off)
		f.Close()
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.VerifyMemory(); err != nil {
		t.Errorf("after undoing the flips: %v", err)
	}
}
