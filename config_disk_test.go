package corral

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

func TestCheckDisk(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.img")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := checkDisk("disk 0", img); err != nil {
		t.Errorf("regular image refused: %v", err)
	}
	for _, p := range []string{filepath.Join(dir, "absent.img"), empty, dir, os.DevNull} {
		if err := checkDisk("disk 0", p); err == nil {
			t.Errorf("checkDisk(%s) accepted", p)
		}
	}
}

// A block device is a disk: stat gives it size 0, but it is not empty.
func TestCheckDiskBlockDevice(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dev := testenv.LoopDevice(t, img)
	if err := checkDisk("disk 0", dev); err != nil {
		t.Fatalf("block device %s refused: %v", dev, err)
	}
}
