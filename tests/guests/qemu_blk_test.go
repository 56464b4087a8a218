package guests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// The blk guest under QEMU's virtio-blk-pci (modern only) proves the guest's
// virtio driver independently of Corral. -M pc with qboot: qboot enables
// memory decode but leaves BARs at 0, so the guest places them itself (and
// says so with a "pci: ... assigned" line).

const (
	qemuBlkSector  = 512
	qemuBlkImage   = 1 << 20
	qemuBlkRead    = 3
	qemuBlkWrite   = 9
	qemuBlkText    = "QEMU virtio-blk test image, sector three"
	qemuBlkSerial  = "qemu-test"
	qemuBlkMachine = "pc"
)

func needQBoot(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(qbootROM); err != nil {
		t.Skipf("%s missing: -M pc would spend seconds in SeaBIOS", qbootROM)
	}
}

// qemuBlkImageFile writes an image whose sector i is filled with byte
// i mod 251, except sector qemuBlkRead, which holds text and a NUL.
func qemuBlkImageFile(t *testing.T, name, text string) (string, []byte) {
	t.Helper()
	img := make([]byte, qemuBlkImage)
	for i := range img {
		img[i] = byte((i / qemuBlkSector) % 251)
	}
	s := img[qemuBlkRead*qemuBlkSector : (qemuBlkRead+1)*qemuBlkSector]
	clear(s)
	copy(s, text)
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, img
}

// qemuDisk is the -drive/-device pair for one modern-only virtio-blk-pci.
func qemuDisk(id, path string, opts ...string) []string {
	drive := fmt.Sprintf("if=none,id=%s,file=%s,format=raw", id, path)
	dev := fmt.Sprintf("virtio-blk-pci,drive=%s,disable-legacy=on", id)
	for _, o := range opts {
		if o == "readonly=on" {
			drive += "," + o
		} else {
			dev += "," + o
		}
	}
	return []string{"-drive", drive, "-device", dev}
}

func writePattern(w int) []byte {
	b := make([]byte, qemuBlkSector)
	for i := range b {
		b[i] = byte(i)
	}
	n := copy(b, fmt.Sprintf("corral-blk-write %d", w))
	b[n] = 0
	return b
}

func TestQEMUBlk(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	kernel := BuildT(t, "blk")
	placed := regexp.MustCompile(`^pci: 00:[0-9a-f]{2}\.0 BAR 4 assigned 0x[0-9a-f]+ \(size 0x4000\)$`)

	t.Run("rw", func(t *testing.T) {
		img, orig := qemuBlkImageFile(t, "rw.img", qemuBlkText)
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel,
			cmdline: fmt.Sprintf("read=%d write=%d readpast=1 expect=rw", qemuBlkRead, qemuBlkWrite),
			extra:   qemuDisk("d0", img, "serial="+qemuBlkSerial)})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantReadyFirst(t, lines)
		if !slices.ContainsFunc(lines, placed.MatchString) {
			t.Error("no BAR placement line (qboot leaves BARs unassigned)")
		}
		wantInOrder(t, lines,
			fmt.Sprintf("blk: capacity %d sectors (rw), flush yes, queue size 16", qemuBlkImage/qemuBlkSector),
			fmt.Sprintf("blk: sector %d hex: % x", qemuBlkRead, []byte(qemuBlkText[:16])),
			fmt.Sprintf("blk: sector %d: %s", qemuBlkRead, qemuBlkText),
			"blk: write status 0",
			fmt.Sprintf("blk: sector %d verified", qemuBlkWrite),
			"blk: read past end status 1",
			"blk: flush status 0",
			"blk: serial "+qemuBlkSerial,
			"blk: ok")
		got, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Clone(orig)
		copy(want[qemuBlkWrite*qemuBlkSector:], writePattern(qemuBlkWrite))
		if !bytes.Equal(got, want) {
			t.Errorf("image after the run differs from the original plus the guest's write to sector %d", qemuBlkWrite)
		}
	})

	t.Run("ro", func(t *testing.T) {
		img, orig := qemuBlkImageFile(t, "ro.img", qemuBlkText)
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel,
			cmdline: fmt.Sprintf("read=%d write=%d expect=ro", qemuBlkRead, qemuBlkWrite),
			extra:   qemuDisk("d0", img, "readonly=on")})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines,
			fmt.Sprintf("blk: capacity %d sectors (ro), flush yes, queue size 16", qemuBlkImage/qemuBlkSector),
			fmt.Sprintf("blk: sector %d: %s", qemuBlkRead, qemuBlkText),
			"blk: write status 1",
			"blk: ok")
		if got, err := os.ReadFile(img); err != nil || !bytes.Equal(got, orig) {
			t.Errorf("read-only image changed (read error %v)", err)
		}
	})

	t.Run("expect-mismatch", func(t *testing.T) {
		img, _ := qemuBlkImageFile(t, "rw.img", qemuBlkText)
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel,
			cmdline: "expect=ro", extra: qemuDisk("d0", img)})
		if want := QEMUStatus(ExitBlkROMismatch); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "blk: expected a ro disk")
	})

	t.Run("slot", func(t *testing.T) {
		a, _ := qemuBlkImageFile(t, "a.img", "disk A")
		b, _ := qemuBlkImageFile(t, "b.img", "disk B")
		extra := append(qemuDisk("da", a, "addr=4", "serial=disk-a"), qemuDisk("db", b, "addr=6", "serial=disk-b")...)
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel,
			cmdline: fmt.Sprintf("slot=6 read=%d", qemuBlkRead), extra: extra})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "virtio: 00:06.0 dev 0x1042 bar 4 at 0xe0000000",
			fmt.Sprintf("blk: sector %d: disk B", qemuBlkRead), "blk: serial disk-b", "blk: ok")
	})

	t.Run("badreq", func(t *testing.T) {
		img, _ := qemuBlkImageFile(t, "rw.img", qemuBlkText)
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel,
			cmdline: fmt.Sprintf("read=%d badreq=1", qemuBlkRead), extra: qemuDisk("d0", img)})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		read := fmt.Sprintf("blk: sector %d: %s", qemuBlkRead, qemuBlkText)
		wantInOrder(t, lines, read, "virtio: queue 0: device needs reset (status 0x4f)",
			"blk: malformed request: device needs reset", read, "blk: recovered after reset", "blk: ok")
	})

	t.Run("no-device", func(t *testing.T) {
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel})
		if want := QEMUStatus(ExitVirtioNoDevice); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "virtio: no device 0x1042 on bus 0")
	})

	t.Run("seqread", func(t *testing.T) {
		img := make([]byte, 8<<20)
		for s := 0; s < len(img)/qemuBlkSector; s++ {
			binary.LittleEndian.PutUint64(img[s*qemuBlkSector:], uint64(s))
		}
		p := filepath.Join(t.TempDir(), "seq.img")
		if err := os.WriteFile(p, img, 0o644); err != nil {
			t.Fatal(err)
		}
		lines, status := runQEMU(t, qemu, qemuRun{machine: qemuBlkMachine, kernel: kernel,
			cmdline: "seqread=8 reqkb=64 depth=4 seqcheck=1", extra: qemuDisk("d0", p, "readonly=on")})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		seq := regexp.MustCompile(`^blk: seqread 8 MiB, 128 requests of 64 KiB, depth 4: \d+ ticks, \d+ us, [0-9.]+ MiB/s`)
		if !slices.ContainsFunc(lines, seq.MatchString) {
			t.Errorf("no seqread result line in:\n%s", strings.Join(lines, "\n"))
		}
		wantInOrder(t, lines, "blk: ok")
	})
}
