package blk

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// A block device serves as a disk like an image file: its size is the
// capacity, and it is locked the same way.
func TestBlockDevice(t *testing.T) {
	img := tempImage(t, imgSize)
	dev := testenv.LoopDevice(t, img)
	if st, err := os.Stat(dev); err != nil || st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
		t.Fatalf("%s is not a block device: %v", dev, err)
	}
	h := newHarness(t, Config{Path: dev}, 0)
	if c := h.dev.Capacity(); c != imgSize/SectorSize {
		t.Fatalf("capacity %d sectors; want %d", c, imgSize/SectorSize)
	}
	data := pattern(8192, 5)
	if r := h.do(req{typ: TypeOut, sector: 40, out: data}); r.status != StatusOK {
		t.Fatalf("write status %d", r.status)
	}
	if r := h.do(req{typ: TypeIn, sector: 40, in: len(data)}); r.status != StatusOK || !bytes.Equal(r.in, data) {
		t.Fatalf("read back: status %d, equal %v", r.status, bytes.Equal(r.in, data))
	}
	if r := h.do(req{typ: TypeIn, sector: imgSize / SectorSize, in: 512}); r.status != StatusIOErr {
		t.Fatalf("read past the device's end: status %d", r.status)
	}
	if err := h.dev.Reset(); err != nil { // fdatasync
		t.Fatal(err)
	}
	if got := fileBytes(t, img, 40*SectorSize, len(data)); !bytes.Equal(got, data) {
		t.Fatal("the loop device's backing file does not hold the written data")
	}
	// Locked exclusively while open read-write.
	for _, ro := range []bool{false, true} {
		if d, err := Open(Config{Path: dev, ReadOnly: ro}); !errors.Is(err, ErrImageLocked) {
			if err == nil {
				d.Close()
			}
			t.Fatalf("second Open (read-only %v) of a block device in use: %v; want ErrImageLocked", ro, err)
		}
	}
}

// Read-only opens of a block device share it; a writer is refused.
func TestBlockDeviceReadOnlyShared(t *testing.T) {
	dev := testenv.LoopDevice(t, tempImage(t, imgSize))
	a, err := Open(Config{Path: dev, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(Config{Path: dev, ReadOnly: true})
	if err != nil {
		t.Fatalf("second read-only Open: %v", err)
	}
	defer b.Close()
	if a.Features()&FRO == 0 || a.Capacity() != imgSize/SectorSize {
		t.Fatalf("features %#x capacity %d", a.Features(), a.Capacity())
	}
	if d, err := Open(Config{Path: dev}); !errors.Is(err, ErrImageLocked) {
		if err == nil {
			d.Close()
		}
		t.Fatalf("read-write Open while shared: %v; want ErrImageLocked", err)
	}
}

// Character devices and directories are not disks.
func TestOpenRefusesOtherFiles(t *testing.T) {
	for _, p := range []string{os.DevNull, t.TempDir()} {
		if d, err := Open(Config{Path: p, ReadOnly: true}); err == nil {
			d.Close()
			t.Errorf("Open(%s) accepted", p)
		}
	}
}
