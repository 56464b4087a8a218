package hostfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// split cuts n bytes into buffers of size bytes (the last one shorter).
func split(n, size int) ([][]byte, []byte) {
	whole := make([]byte, n)
	var dst [][]byte
	for off := 0; off < n; off += size {
		dst = append(dst, whole[off:min(off+size, n)])
	}
	return dst, whole
}

// TestStagedRead: a read through a key lands in the staged buffers (not
// in ReadAt's), once, with the guest's offset; its count comes from
// FinishRead.
func TestStagedRead(t *testing.T) {
	_, share := tree(t)
	data := make([]byte, 300<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(share, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	fs, root := open(t, share, Options{ReadOnly: true})
	f := mustWalk(t, root, "big")
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		off, n    int
		seg, want int
	}{
		{"whole segments", 4096, 64 << 10, 4096, 64 << 10},
		{"odd segments", 1, 10000, 333, 10000},
		{"more buffers than one preadv takes", 0, 3000, 1, 3000},
		{"short at the end", len(data) - 100, 4096, 512, 100},
		{"at the end", len(data), 4096, 4096, 0},
		{"past the end", len(data) + 5, 4096, 4096, 0},
		{"nothing", 10, 0, 1, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst, whole := split(c.n, c.seg)
			key := fs.StageRead(dst, uint64(c.off))
			own := []byte("untouched")
			n, err := f.ReadAt(own, int64(key))
			if n != 0 || err != nil {
				t.Fatalf("ReadAt(key) = %d, %v; want 0, nil", n, err)
			}
			if string(own) != "untouched" {
				t.Errorf("ReadAt wrote its own buffer: %q", own)
			}
			if _, err := f.ReadAt(own, int64(key)); !errors.Is(err, unix.EINVAL) {
				t.Errorf("second ReadAt of one key: %v, want EINVAL", err)
			}
			got, ran := fs.FinishRead(key)
			if !ran || got != c.want {
				t.Fatalf("FinishRead = %d, %v; want %d, true", got, ran, c.want)
			}
			if !bytes.Equal(whole[:got], data[min(c.off, len(data)):min(c.off, len(data))+got]) {
				t.Errorf("staged buffers do not hold the file's bytes at %d", c.off)
			}
			if _, ran := fs.FinishRead(key); ran {
				t.Error("FinishRead twice: ran")
			}
		})
	}
	if n := fs.Staged(); n != 0 {
		t.Errorf("%d reads staged after all finished", n)
	}
}

// TestStagedReadErrors: a key names one staged read; reads that cannot be
// (a directory, a file not open, an offset pread refuses, a key never
// given) fail as plain reads do and leave the buffers alone.
func TestStagedReadErrors(t *testing.T) {
	_, share := tree(t)
	fs, root := open(t, share, Options{})
	dst, whole := split(64, 16)

	a := mustWalk(t, root, "a.txt")
	if _, _, err := a.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	// A key never given, and a negative offset (no key either): EINVAL.
	unknown := uint64(stagedBit | 999)
	for _, off := range []int64{int64(unknown), -1} {
		if _, err := a.ReadAt(make([]byte, 4), off); !errors.Is(err, unix.EINVAL) {
			t.Errorf("offset %#x: %v, want EINVAL", uint64(off), err)
		}
	}

	// The guest's offset past what pread takes.
	key := fs.StageRead(dst, 1<<63)
	if _, err := a.ReadAt(nil, int64(key)); !errors.Is(err, unix.EINVAL) {
		t.Errorf("offset 2^63: %v, want EINVAL", err)
	}
	if n, ran := fs.FinishRead(key); n != 0 || !ran {
		t.Errorf("FinishRead = %d, %v", n, ran)
	}

	// A directory.
	d := mustWalk(t, root, "d")
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	key = fs.StageRead(dst, 0)
	if _, err := d.ReadAt(nil, int64(key)); !errors.Is(err, unix.EISDIR) {
		t.Errorf("directory: %v, want EISDIR", err)
	}
	fs.FinishRead(key)

	// Walked, not opened: the key stays unused.
	b := mustWalk(t, root, "d", "b")
	key = fs.StageRead(dst, 0)
	if _, err := b.ReadAt(nil, int64(key)); !errors.Is(err, unix.EBADF) {
		t.Errorf("not open: %v, want EBADF", err)
	}
	if _, ran := fs.FinishRead(key); ran {
		t.Error("not open: the staged read ran")
	}

	// Open for writing only.
	w := mustWalk(t, root, "d", "b")
	if _, _, err := w.Open(p9.WriteOnly); err != nil {
		t.Fatal(err)
	}
	key = fs.StageRead(dst, 0)
	if _, err := w.ReadAt(nil, int64(key)); !errors.Is(err, unix.EBADF) {
		t.Errorf("write-only: %v, want EBADF", err)
	}
	fs.FinishRead(key)

	if !bytes.Equal(whole, make([]byte, len(whole))) {
		t.Errorf("failed reads wrote the staged buffers: %q", whole)
	}
}
