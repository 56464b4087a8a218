package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

// cacheDir is ${CORRAL_CACHE:-$HOME/.cache/corral}.
func cacheDir(t *testing.T) string {
	if d := os.Getenv("CORRAL_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		t.Skipf("no CORRAL_CACHE and no home directory: %v", err)
	}
	return filepath.Join(home, ".cache", "corral")
}

// loadFile loads a kernel file into 256 MiB of lazily allocated RAM.
func loadFile(t *testing.T, path string, initrd []byte) (*guestmem.Memory, *Entry, []byte) {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	e, err := loadBytes(mem, img, initrd, "console=ttyS0 panic=-1", 2)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return mem, e, img
}

// checkRealBzImage checks a real bzImage's load: the protected-mode kernel
// at 1 MiB, the header in the zero page and the 64-bit entry.
func checkRealBzImage(t *testing.T, mem *guestmem.Memory, e *Entry, img []byte) {
	t.Helper()
	if e.Kind != KindBzImage || e.Mode != Mode64 || e.RIP != KernelAddr+0x200 || e.RSI != ZeroPageAddr {
		t.Fatalf("entry %+v", e)
	}
	h, err := parseSetupHeader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("protocol %d.%02d, setup %d bytes, kernel %d bytes (file %d), init_size %#x, pref_address %#x, align %#x",
		h.version>>8, h.version&0xff, h.setupSize, h.kernelSize, len(img), h.initSize, h.prefAddress, h.kernelAlign)
	if got := mustRead(t, mem, KernelAddr, h.kernelSize); !bytes.Equal(got, img[h.setupSize:h.setupSize+h.kernelSize]) {
		t.Error("kernel at 1 MiB differs from the file's protected-mode part")
	}
	zp := mustRead(t, mem, ZeroPageAddr, zeroPageSize)
	if !bytes.Equal(zp[versionOff:versionOff+2], img[versionOff:versionOff+2]) || string(zp[hdrMagicOff:hdrMagicOff+4]) != "HdrS" {
		t.Error("setup header not copied to the zero page")
	}
	if binary.LittleEndian.Uint32(zp[ramdiskSizeOff:]) != 4096 {
		t.Error("ramdisk_size not set")
	}
}

// TestDebianKernel loads Debian's linux-image-amd64 bzImage (signed: a
// signature follows the syssize bytes).
func TestDebianKernel(t *testing.T) {
	path := filepath.Join(cacheDir(t), "debian-kernel", "vmlinuz")
	if _, err := os.Stat(path); err != nil {
		t.Skipf("Debian kernel not cached at %s (run boot/testdata/fetch-debian-kernel.sh): %v", path, err)
	}
	mem, e, img := loadFile(t, path, make([]byte, 4096))
	checkRealBzImage(t, mem, e, img)

	// Its init_size (about 64 MiB from 16 MiB) does not fit in 64 MiB.
	_, err := loadBytes(newMem(t, 64<<20), img, nil, "", 1)
	if !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "init_size") {
		t.Errorf("Debian kernel in 64 MiB: got %v, want ErrNoRoom naming init_size", err)
	}
}

// TestBuiltKernels loads the project's test kernels (bzImage and PVH
// vmlinux) from the cache, if they have been built.
func TestBuiltKernels(t *testing.T) {
	dir := filepath.Join(cacheDir(t), "kernel")
	bz, _ := filepath.Glob(filepath.Join(dir, "*", "bzImage"))
	vm, _ := filepath.Glob(filepath.Join(dir, "*", "vmlinux"))
	if len(bz)+len(vm) == 0 {
		t.Skipf("no test kernel built under %s/*/{bzImage,vmlinux} (the Linux test-kernel build makes them)", dir)
	}
	for _, path := range bz {
		t.Run(path, func(t *testing.T) {
			mem, e, img := loadFile(t, path, make([]byte, 4096))
			checkRealBzImage(t, mem, e, img)
		})
	}
	for _, path := range vm {
		t.Run(path, func(t *testing.T) {
			_, e, img := loadFile(t, path, make([]byte, 4096))
			if e.Kind != KindPVH || e.Mode != Mode32 || e.RBX != PVHInfoAddr {
				t.Fatalf("entry %+v", e)
			}
			// The note must point at pvh_start_xen's physical address.
			f, err := elf.NewFile(bytes.NewReader(img))
			if err != nil {
				t.Fatal(err)
			}
			syms, err := f.Symbols()
			if err != nil {
				t.Skipf("vmlinux has no symbols to check the entry against: %v", err)
			}
			for _, s := range syms {
				if s.Name == "pvh_start_xen" {
					const startKernelMap = 0xffffffff80000000
					if want := s.Value - startKernelMap; e.RIP != want {
						t.Errorf("RIP %#x, pvh_start_xen is at %#x", e.RIP, want)
					}
					return
				}
			}
			t.Error("vmlinux has no pvh_start_xen symbol")
		})
	}
}
