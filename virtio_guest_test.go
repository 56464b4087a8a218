package corral

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// The blk guest drives Corral's virtio-blk disks through its own polled
// virtio 1.x PCI driver (tests/guests/src/virtio.c): PCI enumeration on
// ports 0xCF8/0xCFC, the BAR the VMM assigned, feature negotiation, a split
// virtqueue, and requests whose effect the tests check on the host file.

const (
	blkSector     = 512
	blkImageSize  = 1 << 20
	blkReadSector = 3
	blkWriteSect  = 9
	blkSerial     = "corral-test"
	// mmioHoleStart and mmioHoleEnd bound where Corral places BARs.
	mmioHoleStart = 0xC000_0000
	mmioHoleEnd   = 0xFEC0_0000
)

// blkSectorText is what the test image holds in sector blkReadSector.
const blkSectorText = "Corral virtio-blk test image, sector three: the quick brown fox!"

// blkImage writes a raw image: sector i filled with byte i (mod 251) except
// sector blkReadSector, which holds blkSectorText and a NUL.
func blkImage(t *testing.T, dir, name, text string) (string, []byte) {
	t.Helper()
	img := make([]byte, blkImageSize)
	for i := range img {
		img[i] = byte((i / blkSector) % 251)
	}
	s := img[blkReadSector*blkSector : (blkReadSector+1)*blkSector]
	clear(s)
	copy(s, text)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, img
}

// blkWritePattern is what the guest's write=W puts in sector W: the text
// "corral-blk-write W", a NUL, and byte i = i & 0xff after it.
func blkWritePattern(w int) []byte {
	b := make([]byte, blkSector)
	for i := range b {
		b[i] = byte(i)
	}
	n := copy(b, fmt.Sprintf("corral-blk-write %d", w))
	b[n] = 0
	return b
}

// runBlkGuest boots the blk guest on disks and returns its exit and console.
func runBlkGuest(t *testing.T, cmdline string, disks ...Disk) (Exit, *console.Buffer) {
	t.Helper()
	m, out := bootGuest(t, Config{Kernel: guests.BuildT(t, "blk"), Cmdline: cmdline, Memory: 64 << 20, Disks: disks})
	e := waitExit(t, m, out)
	t.Logf("console:\n%s", out)
	return e, out
}

// wantLines checks that each of want is a whole console line.
func wantLines(t *testing.T, out *console.Buffer, want ...string) {
	t.Helper()
	lines := strings.Split(strings.ReplaceAll(out.String(), "\r", ""), "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			if l == w {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("console lacks the line %q", w)
		}
	}
}

// wantVMMPlacedBAR checks the guest found the device at slot with a BAR the
// VMM had placed in the MMIO hole (the guest only assigns BARs itself when
// firmware left them at 0, and then says so).
func wantVMMPlacedBAR(t *testing.T, out *console.Buffer, slot int) {
	t.Helper()
	if strings.Contains(out.String(), "pci: ") {
		t.Errorf("the guest had to assign a BAR itself: Corral left it unassigned")
	}
	m := regexp.MustCompile(`virtio: 00:([0-9a-f]{2})\.0 dev 0x1042 bar 0 at 0x([0-9a-f]+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no virtio device line for slot %d", slot)
	}
	if got, _ := strconv.ParseUint(m[1], 16, 8); int(got) != slot {
		t.Errorf("guest drove the disk at slot %d, want %d", got, slot)
	}
	addr, _ := strconv.ParseUint(m[2], 16, 64)
	if addr < mmioHoleStart || addr >= mmioHoleEnd || addr%0x4000 != 0 {
		t.Errorf("BAR 0 at %#x: want a 16 KiB-aligned address in [%#x, %#x)", addr, mmioHoleStart, mmioHoleEnd)
	}
}

func wantGuestExit(t *testing.T, e Exit, code int) {
	t.Helper()
	if e.Reason != ExitDebug || int(e.Code) != code {
		t.Errorf("machine ended with %v, want debug-exit code %d", e, code)
	}
}

// TestBlkGuestReadWriteFlush boots the blk guest on a writable disk: it
// reads a known sector, writes another and reads it back, is refused a read
// past the end, flushes and reads the serial; then the host file holds the
// write and nothing else changed.
func TestBlkGuestReadWriteFlush(t *testing.T) {
	testenv.MustHaveKVM(t)
	img, orig := blkImage(t, t.TempDir(), "disk.img", blkSectorText)
	e, out := runBlkGuest(t, fmt.Sprintf("read=%d write=%d readpast=1 expect=rw", blkReadSector, blkWriteSect),
		Disk{Path: img, Serial: blkSerial})
	wantGuestExit(t, e, guests.ExitOK)
	wantVMMPlacedBAR(t, out, 1)
	wantLines(t, out,
		fmt.Sprintf("blk: capacity %d sectors (rw), flush yes, queue size 16", blkImageSize/blkSector),
		fmt.Sprintf("blk: sector %d hex: % x", blkReadSector, []byte(blkSectorText[:16])),
		fmt.Sprintf("blk: sector %d: %s", blkReadSector, blkSectorText),
		"blk: write status 0",
		fmt.Sprintf("blk: sector %d verified", blkWriteSect),
		"blk: read past end status 1",
		"blk: flush status 0",
		"blk: serial "+blkSerial,
		"blk: ok")

	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(orig)
	copy(want[blkWriteSect*blkSector:], blkWritePattern(blkWriteSect))
	if len(got) != len(want) {
		t.Fatalf("image is %d bytes after the run, want %d", len(got), len(want))
	}
	for s := 0; s < len(want)/blkSector; s++ {
		g, w := got[s*blkSector:(s+1)*blkSector], want[s*blkSector:(s+1)*blkSector]
		if !bytes.Equal(g, w) {
			t.Errorf("sector %d on the host: got %q..., want %q...", s, g[:32], w[:32])
		}
	}
}

// TestBlkGuestReadOnly boots the blk guest on a read-only disk: the device
// offers VIRTIO_BLK_F_RO, the guest's write gets VIRTIO_BLK_S_IOERR, and the
// host file is unchanged.
func TestBlkGuestReadOnly(t *testing.T) {
	testenv.MustHaveKVM(t)
	img, orig := blkImage(t, t.TempDir(), "ro.img", blkSectorText)
	e, out := runBlkGuest(t, fmt.Sprintf("read=%d write=%d expect=ro", blkReadSector, blkWriteSect),
		Disk{Path: img, ReadOnly: true, Serial: blkSerial})
	wantGuestExit(t, e, guests.ExitOK)
	wantVMMPlacedBAR(t, out, 1)
	wantLines(t, out,
		fmt.Sprintf("blk: capacity %d sectors (ro), flush yes, queue size 16", blkImageSize/blkSector),
		fmt.Sprintf("blk: sector %d: %s", blkReadSector, blkSectorText),
		"blk: write status 1",
		"blk: serial "+blkSerial,
		"blk: ok")
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, orig) {
		t.Error("the read-only image changed")
	}
}

// TestBlkGuestExpectMismatch checks the guest tells a writable disk from a
// read-only one (so the read-only test cannot pass on a writable device).
func TestBlkGuestExpectMismatch(t *testing.T) {
	testenv.MustHaveKVM(t)
	img, _ := blkImage(t, t.TempDir(), "disk.img", blkSectorText)
	e, out := runBlkGuest(t, "expect=ro", Disk{Path: img})
	wantGuestExit(t, e, guests.ExitBlkROMismatch)
	wantLines(t, out, "blk: expected a ro disk")
}

// TestBlkGuestSlots boots two disks and drives the second by its slot:
// Config.Disks order is PCI slot order from slot 1.
func TestBlkGuestSlots(t *testing.T) {
	testenv.MustHaveKVM(t)
	dir := t.TempDir()
	a, _ := blkImage(t, dir, "a.img", "this is disk A")
	b, _ := blkImage(t, dir, "b.img", "this is disk B")
	e, out := runBlkGuest(t, fmt.Sprintf("slot=2 read=%d", blkReadSector),
		Disk{Path: a, Serial: "disk-a"}, Disk{Path: b, ReadOnly: true, Serial: "disk-b"})
	wantGuestExit(t, e, guests.ExitOK)
	wantVMMPlacedBAR(t, out, 2)
	wantLines(t, out, fmt.Sprintf("blk: sector %d: this is disk B", blkReadSector), "blk: serial disk-b", "blk: ok")
}

// TestBlkGuestMalformedRequest has the guest send a request with no status
// byte: the device cannot answer it, so it must set DEVICE_NEEDS_RESET
// (not hang, not crash the VMM), and after the guest resets it, it serves
// reads again.
func TestBlkGuestMalformedRequest(t *testing.T) {
	testenv.MustHaveKVM(t)
	img, _ := blkImage(t, t.TempDir(), "disk.img", blkSectorText)
	e, out := runBlkGuest(t, fmt.Sprintf("read=%d badreq=1", blkReadSector), Disk{Path: img})
	wantGuestExit(t, e, guests.ExitOK)
	wantLines(t, out, "virtio: queue 0: device needs reset (status 0x4f)",
		"blk: malformed request: device needs reset", "blk: recovered after reset", "blk: ok")
	if n := strings.Count(out.String(), fmt.Sprintf("blk: sector %d: %s\n", blkReadSector, blkSectorText)); n != 2 {
		t.Errorf("sector %d read %d times, want 2 (before the bad request and after the reset)", blkReadSector, n)
	}
}

// TestBlkGuestNoDisk checks the guest's failure path when there is no
// virtio-blk function: its own exit code, and a line saying why.
func TestBlkGuestNoDisk(t *testing.T) {
	testenv.MustHaveKVM(t)
	e, out := runBlkGuest(t, "")
	wantGuestExit(t, e, guests.ExitVirtioNoDevice)
	wantLines(t, out, "virtio: no device 0x1042 on bus 0")
}

// seqImage writes an image of n MiB whose every sector starts with its
// sector number (le64), what the guest's seqcheck=1 verifies.
func seqImage(t testing.TB, dir string, mib int) string {
	t.Helper()
	img := make([]byte, mib<<20)
	for s := 0; s < len(img)/blkSector; s++ {
		binary.LittleEndian.PutUint64(img[s*blkSector:], uint64(s))
	}
	p := filepath.Join(dir, "seq.img")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestBlkGuestSeqRead has the guest read 8 MiB with 64 KiB requests, four in
// flight, checking every request's first and last sector numbers.
func TestBlkGuestSeqRead(t *testing.T) {
	testenv.MustHaveKVM(t)
	img := seqImage(t, t.TempDir(), 8)
	e, out := runBlkGuest(t, "seqread=8 reqkb=64 depth=4 seqcheck=1", Disk{Path: img, ReadOnly: true})
	wantGuestExit(t, e, guests.ExitOK)
	if !regexp.MustCompile(`(?m)^blk: seqread 8 MiB, 128 requests of 64 KiB, depth 4: \d+ ticks`).MatchString(out.String()) {
		t.Error("no seqread result line")
	}
	wantLines(t, out, "blk: ok")
}

// BenchmarkBlkGuestSeqRead boots the blk guest once per iteration to read
// 64 MiB in 128 KiB requests (depth 4) and reports the guest's MiB/s, timed
// by its TSC (bench/blk-seqread.sh compares it with QEMU).
func BenchmarkBlkGuestSeqRead(b *testing.B) {
	testenv.MustHaveKVM(b)
	k := guests.BuildT(b, "blk")
	img := seqImage(b, b.TempDir(), 64)
	rate := regexp.MustCompile(`blk: seqread .* ([0-9.]+) MiB/s`)
	var sum float64
	for b.Loop() {
		out := console.NewBuffer(0)
		m, err := New(Config{Kernel: k, Cmdline: "seqread=64 seqcheck=1", Memory: 64 << 20, Console: out,
			Disks: []Disk{{Path: img, ReadOnly: true}}})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Start(b.Context()); err != nil {
			m.Close()
			b.Fatal(err)
		}
		e := m.Wait()
		mm := rate.FindStringSubmatch(out.String())
		if e.Reason != ExitDebug || e.Code != 0 || mm == nil {
			b.Fatalf("machine ended with %v; console:\n%s", e, out)
		}
		v, _ := strconv.ParseFloat(mm[1], 64)
		sum += v
	}
	b.ReportMetric(sum/float64(b.N), "guest-MiB/s")
}
