package snapshot

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

// testMemory is guest RAM of two regions, the first 4 MiB + 12 KiB at 0 (so
// its last chunk is short), the second 2 MiB at 4 GiB, with a pattern in
// chunk 1 of the first region (guest address 0x200000) and one page of the
// second; every other chunk is zero.
func testMemory(t testing.TB) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: 4<<20 + 3*4096}, guestmem.Range{GPA: 1 << 32, Size: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	for i := uint64(0); i < 3*4096; i++ {
		m.WriteAt([]byte{byte(i*13 + 1)}, 0x200000+i)
	}
	m.WriteAt([]byte("guest page at 4 GiB + 8 KiB"), 1<<32+8192)
	return m
}

var testSections = []section{
	{"meta", []byte(`{"name":"vm1"}`)},
	{"vcpu.0", bytes.Repeat([]byte{0xa5}, 100)},
	{"vcpu.1", []byte("second vcpu")},
	{"empty", nil},
}

// writeSnapshot commits a snapshot of mem with testSections at dir.
func writeSnapshot(t testing.TB, dir string, mem *guestmem.Memory) {
	t.Helper()
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	for _, s := range testSections {
		if err := w.AddSection(s.name, s.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteMemory(mem); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestRoundTrip(t *testing.T) {
	mem := testMemory(t)
	dir := filepath.Join(t.TempDir(), "snap")
	writeSnapshot(t, dir, mem)

	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var names []string
	for _, sec := range testSections {
		names = append(names, sec.name)
		got, err := s.Section(sec.name)
		if err != nil || !bytes.Equal(got, sec.data) {
			t.Errorf("Section(%q) = %q, %v; want %q", sec.name, got, err, sec.data)
		}
	}
	if got := s.Sections(); fmt.Sprint(got) != fmt.Sprint(names) {
		t.Errorf("Sections() = %q, want %q", got, names)
	}
	if _, err := s.Section("vcpu.2"); !errors.Is(err, ErrNoSection) {
		t.Errorf("Section(missing): err = %v, want ErrNoSection", err)
	}
	if _, err := s.Section(layoutSection); !errors.Is(err, ErrNoSection) {
		t.Errorf("Section(%q): err = %v, want ErrNoSection", layoutSection, err)
	}
	if err := s.VerifyMemory(); err != nil {
		t.Fatal(err)
	}

	m, err := s.MapMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(m.Regions()) != len(mem.Regions()) {
		t.Fatalf("%d regions, want %d", len(m.Regions()), len(mem.Regions()))
	}
	for i, r := range mem.Regions() {
		g := m.Regions()[i]
		if g.GPA != r.GPA || !bytes.Equal(g.Data, r.Data) {
			t.Errorf("region %d at %#x: restored memory differs from saved", i, r.GPA)
		}
	}
	// Writes to the restored guest stay private: the snapshot still verifies
	// and a second map sees the saved bytes.
	m.WriteAt([]byte("scribble"), 0x200000)
	m.WriteAt([]byte("scribble"), 0x100000)
	if err := s.VerifyMemory(); err != nil {
		t.Errorf("after guest writes to a map: %v", err)
	}
	m2, err := s.MapMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	b := make([]byte, 8)
	m2.ReadAt(b, 0x200000)
	want := make([]byte, 8)
	mem.ReadAt(want, 0x200000)
	if !bytes.Equal(b, want) {
		t.Errorf("second map reads %q at 0x200000, want the saved %q", b, want)
	}
}

func TestCreateTarget(t *testing.T) {
	parent := t.TempDir()
	full := filepath.Join(parent, "full")
	os.Mkdir(full, 0o700)
	os.WriteFile(filepath.Join(full, "x"), nil, 0o600)
	if _, err := Create(full); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "directory exists and is not empty") {
		t.Errorf("Create(non-empty dir): err = %v", err)
	}
	file := filepath.Join(parent, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Create(file); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("Create(file): err = %v", err)
	}
	if _, err := Create(filepath.Join(parent, "nodir", "snap")); err == nil {
		t.Error("Create under a missing parent succeeded")
	}

	// Nothing is visible at the target before Commit; an empty directory
	// is replaced.
	empty := filepath.Join(parent, "empty")
	os.Mkdir(empty, 0o700)
	w, err := Create(empty)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil || !strings.Contains(err.Error(), "Commit before WriteMemory") {
		t.Errorf("Commit before WriteMemory: err = %v", err)
	}
	if err := w.WriteMemory(testMemory(t)); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Errorf("before Commit the target holds %v", ents)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(empty); err != nil {
		t.Error(err)
	} else {
		s.Close()
	}
	if err := w.AddSection("late", nil); err == nil {
		t.Error("AddSection after Commit accepted")
	}

	// Abort leaves nothing behind.
	w, err = Create(filepath.Join(parent, "aborted"))
	if err != nil {
		t.Fatal(err)
	}
	w.AddSection("a", []byte("x"))
	w.WriteMemory(testMemory(t))
	w.Abort()
	ents, _ := os.ReadDir(parent)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if fmt.Sprint(left) != "[empty file full]" {
		t.Errorf("after Abort the parent holds %v", left)
	}
}

func TestAddSectionRejects(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.AddSection("ok", nil); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"":                      "length 0",
		strings.Repeat("a", 65): "length 65",
		"Vcpu":                  "byte 0x56 at 0",
		"a/b":                   "byte 0x2f at 1",
		"a\x00":                 "byte 0x0 at 1",
		"ok":                    "added twice",
		layoutSection:           "reserved",
		strings.Repeat("z", 64): "",
		"vcpu.0_x-y":            "",
	} {
		err := w.AddSection(name, []byte("d"))
		if want == "" {
			if err != nil {
				t.Errorf("AddSection(%q): %v", name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("AddSection(%q): err = %v, want %q", name, err, want)
		}
	}
	if err := w.AddSection("big", make([]byte, MaxSectionSize+1)); err == nil || !strings.Contains(err.Error(), "over the") {
		t.Errorf("oversized section: err = %v", err)
	}
	for i := len(w.sections); i < MaxSections-1; i++ {
		if err := w.AddSection(fmt.Sprintf("s%d", i), nil); err != nil {
			t.Fatalf("section %d: %v", i, err)
		}
	}
	if err := w.AddSection("one-too-many", nil); err == nil || !strings.Contains(err.Error(), "more than 1024 sections") {
		t.Errorf("section %d: err = %v", MaxSections, err)
	}
	// The last table entry is the memory layout's.
	if err := w.WriteMemory(testMemory(t)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMemory(testMemory(t)); err == nil {
		t.Error("WriteMemory twice accepted")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(w.dir)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if n := len(s.Sections()); n != MaxSections-1 {
		t.Errorf("%d sections, want %d", n, MaxSections-1)
	}
}

// TestSparse checks that only touched pages take disk space: a 512 MiB guest
// that touched 64 MiB makes a memory file of about 64 MiB of blocks.
func TestSparse(t *testing.T) {
	const size, touched = 512 << 20, 64 << 20
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: size})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	// 32 MiB in one run, and 8192 pages scattered one in every 8.
	data := mem.Regions()[0].Data
	for i := 0; i < 32<<20; i++ {
		data[64<<20+i] = byte(i | 1)
	}
	for p := 0; p < 8192; p++ {
		data[128<<20+p*8*4096+100] = 1
	}
	dir := filepath.Join(t.TempDir(), "s")
	w, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMemory(mem); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, memoryFile))
	if err != nil {
		t.Fatal(err)
	}
	used := fi.Sys().(*syscall.Stat_t).Blocks * 512
	t.Logf("memory file: size %d, %d bytes of blocks", fi.Size(), used)
	if fi.Size() < size {
		t.Errorf("memory file size %d, under the guest's %d", fi.Size(), size)
	}
	if used < touched || used > touched+2<<20 {
		t.Errorf("memory file uses %d bytes of blocks, want about %d", used, touched)
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.VerifyMemory(); err != nil {
		t.Fatal(err)
	}
	m, err := s.MapMemory()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !bytes.Equal(m.Regions()[0].Data, data) {
		t.Error("restored memory differs from saved")
	}
}
