package guestmem

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testFile writes n bytes where byte i is byte(i*7+i/4096) and returns it
// opened read-only, as a snapshot's memory file is.
func testFile(t *testing.T, n int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	p := filepath.Join(t.TempDir(), "mem")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

func TestMapFilePrivate(t *testing.T) {
	pg := uint64(unix.Getpagesize())
	f, data := testFile(t, int(8*pg))
	ranges := []FileRange{{GPA: 0x100000, Size: 2 * pg, Offset: 4 * pg}, {GPA: 0, Size: pg, Offset: pg}}
	m, err := MapFile(f, ranges)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Size() != 3*pg {
		t.Errorf("Size = %#x, want %#x", m.Size(), 3*pg)
	}
	got := make([]byte, 2*pg)
	if err := m.ReadAt(got, 0x100000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data[4*pg:6*pg]) {
		t.Error("region at 0x100000 does not hold file bytes [4 pages, 6 pages)")
	}
	if v, _ := m.Uint32(8); v != uint32(data[pg+8])|uint32(data[pg+9])<<8|uint32(data[pg+10])<<16|uint32(data[pg+11])<<24 {
		t.Errorf("Uint32(8) = %#x", v)
	}

	// A second map of the same file shares it but not the first map's writes.
	m2, err := MapFile(f, ranges)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if err := m.PutUint64(0x100010, 0xdeadbeefcafef00d); err != nil {
		t.Fatal(err)
	}
	if v, _ := m2.Uint64(0x100010); v == 0xdeadbeefcafef00d {
		t.Error("a write to one private map is visible in another")
	}
	onDisk, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, data) {
		t.Error("a write to guest memory changed the file")
	}
	// The mapping outlives the descriptor.
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Uint64(0x100010); v != 0xdeadbeefcafef00d {
		t.Errorf("after closing the file, Uint64 = %#x", v)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if m.Regions() != nil {
		t.Error("Close left regions behind")
	}
}

func TestMapFileRejects(t *testing.T) {
	pg := uint64(unix.Getpagesize())
	f, _ := testFile(t, int(4*pg))
	cases := []struct {
		name string
		r    []FileRange
		want string
	}{
		{"zero size", []FileRange{{GPA: 0, Size: 0, Offset: 0}}, "not a positive multiple of the page size"},
		{"odd size", []FileRange{{GPA: 0, Size: pg + 1, Offset: 0}}, "not a positive multiple of the page size"},
		{"odd offset", []FileRange{{GPA: 0, Size: pg, Offset: 12}}, "file offset 0xc is not page aligned"},
		{"past EOF", []FileRange{{GPA: 0, Size: 2 * pg, Offset: 3 * pg}}, "past the file's end"},
		{"offset wraps", []FileRange{{GPA: 0, Size: pg, Offset: -pg}}, "past the file's end"},
		{"too large", []FileRange{{GPA: 0, Size: 1 << 47, Offset: 0}}, "too large"},
		{"overlap", []FileRange{{GPA: 0, Size: 2 * pg, Offset: 0}, {GPA: pg, Size: pg, Offset: 0}}, "overlaps"},
	}
	for _, c := range cases {
		m, err := MapFile(f, c.r)
		if err == nil {
			m.Close()
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q, want one line containing %q", c.name, err, c.want)
		}
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if _, err := MapFile(dir, []FileRange{{Size: pg}}); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: err = %v", err)
	}
}
