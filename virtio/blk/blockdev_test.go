package blk

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// loopDevice attaches file to a free loop device and detaches it when the
// test ends; it skips the test when that is not possible here (fails it
// with CORRAL_REQUIRE=root).
func loopDevice(t *testing.T, file string) string {
	t.Helper()
	testenv.MustHaveRoot(t)
	losetup := testenv.MustHaveCommand(t, "losetup", "mount")
	out, err := exec.Command(losetup, "-f", "--show", file).CombinedOutput()
	if err != nil {
		testenv.Missing(t, testenv.Root, "no loop device: losetup -f --show: %v: %s", err, bytes.TrimSpace(out))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}

// A block device serves as a disk like an image file: its size is the
// capacity, and it is locked the same way.
func TestBlockDevice(t *testing.T) {
	img := tempImage(t, imgSize)
	dev := loopDevice(t, img)
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
	dev := loopDevice(t, tempImage(t, imgSize))
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
