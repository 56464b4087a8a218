package boot

import (
	"bytes"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var updateSeeds = flag.Bool("update-fuzz-seeds", false, "rewrite testdata/fuzz/FuzzLoad from the synthetic kernel builders")

// fuzzSeeds are small valid kernels of every form Load accepts.
func fuzzSeeds() map[string][]byte {
	bz := bzDefaults()
	bz.payload = 256
	bz.trailer = 32
	bz.initSize = 0x800000
	bz0 := bz
	bz0.setupSects = 0
	small := func(o elfOpts) elfOpts {
		o.segs = []elfSeg{{paddr: 0x1000000, data: bytes.Repeat([]byte{0x90}, 128), memsz: 4096}, {paddr: 0x1002000, data: []byte("data")}}
		o.entry = 0x1000010
		return o
	}
	e32 := small(elfOpts{class: elf.ELFCLASS32})
	sec := small(elfOpts{noteInSec: true})
	many := small(elfOpts{})
	many.notes = append(xenNote("GNU", 3, []byte{1, 2, 3, 4}), entryNote(many.entry, 4)...)
	return map[string][]byte{
		"bzimage":         makeBzImage(bz),
		"bzimage-sects0":  makeBzImage(bz0),
		"pvh-elf64":       makeELF(small(elfOpts{})),
		"pvh-elf32":       makeELF(e32),
		"pvh-note-in-sec": makeELF(sec),
		"pvh-two-notes":   makeELF(many),
	}
}

// FuzzLoad loads arbitrary bytes as a kernel: Load must never panic, and
// every failure must be one of the package's sentinel errors (a raw
// guestmem bounds error would mean a missing check).
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	mem := newMem(f, 32<<20)
	f.Fuzz(func(t *testing.T, kernel []byte) {
		e, err := loadBytes(mem, kernel, []byte("initrd"), "console=ttyS0", 2)
		if err != nil {
			if e != nil {
				t.Fatal("entry returned with an error")
			}
			for _, s := range []error{ErrNotKernel, ErrBadKernel, ErrNoPVHEntry, ErrNoRoom, ErrBadConfig} {
				if errors.Is(err, s) {
					return
				}
			}
			t.Fatalf("error without a sentinel: %v", err)
		}
		k, derr := DetectKind(bytes.NewReader(kernel), int64(len(kernel)))
		if derr != nil || k != e.Kind {
			t.Fatalf("Load found %v, DetectKind %v, %v", e.Kind, k, derr)
		}
		switch e.Kind {
		case KindBzImage:
			if e.Mode != Mode64 || e.RIP != KernelAddr+0x200 {
				t.Fatalf("bzImage entry %+v", e)
			}
		case KindPVH:
			if e.Mode != Mode32 || e.RIP < KernelAddr || e.RIP >= mem.Size() {
				t.Fatalf("PVH entry %+v outside the loaded kernel", e)
			}
		default:
			t.Fatalf("kind %v", e.Kind)
		}
	})
}

// TestFuzzSeeds checks that testdata/fuzz/FuzzLoad holds the current seeds
// (go test -run TestFuzzSeeds -update-fuzz-seeds rewrites them) and that
// each loads.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzLoad")
	for name, b := range fuzzSeeds() {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is missing or stale (err %v); rerun with -update-fuzz-seeds", path, err)
		}
		if _, err := loadBytes(newMem(t, 32<<20), b, []byte("initrd"), "", 2); err != nil {
			t.Errorf("seed %s does not load: %v", name, err)
		}
	}
}
