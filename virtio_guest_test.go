package corral

import (
	"fmt"
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

// mmioHoleStart and mmioHoleEnd bound where Corral places BARs.
const (
	mmioHoleStart = 0xC000_0000
	mmioHoleEnd   = 0xFEC0_0000
)

// runBlkGuest boots the blk guest on disks and returns its exit and console.
func runBlkGuest(t *testing.T, cmdline string, disks ...Disk) (Exit, *console.Buffer) {
	t.Helper()
	m, out := bootGuest(t, Config{Kernel: guests.BuildT(t, "blk"), Cmdline: cmdline, Memory: 64 << 20, Disks: disks})
	e := waitExit(t, m, out)
	t.Logf("console:\n%s", out)
	return e, out
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

// TestBlkGuest runs the blk guest's scenarios (guests.BlkScenarios, which
// tests/guests also runs under QEMU) on Corral: Config.Disks order is PCI
// slot order from slot 1, and Corral places the BARs itself.
func TestBlkGuest(t *testing.T) {
	testenv.MustHaveKVM(t)
	for _, sc := range guests.BlkScenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			dir := t.TempDir()
			var disks []Disk
			for i, d := range sc.Disks {
				p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
				if err := d.WriteImage(p); err != nil {
					t.Fatal(err)
				}
				disks = append(disks, Disk{Path: p, ReadOnly: d.ReadOnly, Serial: d.Serial})
			}
			slot := func(disk int) int { return disk + 1 }
			e, out := runBlkGuest(t, sc.CmdlineFor(slot), disks...)
			wantGuestExit(t, e, sc.Exit)
			if err := sc.CheckConsole(guests.ConsoleLines(out.String())); err != nil {
				t.Error(err)
			}
			if len(disks) > 0 {
				wantVMMPlacedBAR(t, out, slot(sc.DriveIndex()))
			}
			for i, d := range sc.Disks {
				if err := d.CheckImage(disks[i].Path); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// BenchmarkBlkGuestSeqRead boots the blk guest once per iteration to read
// 64 MiB in 128 KiB requests (depth 4) and reports the guest's MiB/s, timed
// by its TSC (bench/blk-seqread.sh compares it with QEMU).
func BenchmarkBlkGuestSeqRead(b *testing.B) {
	testenv.MustHaveKVM(b)
	k := guests.BuildT(b, "blk")
	img := filepath.Join(b.TempDir(), "seq.img")
	if err := (guests.ScenarioDisk{SeqMiB: 64}).WriteImage(img); err != nil {
		b.Fatal(err)
	}
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
		e, _ := m.Wait() // an ExitError fails the Reason check below
		mm := rate.FindStringSubmatch(out.String())
		if e.Reason != ExitDebug || e.Code != 0 || mm == nil {
			b.Fatalf("machine ended with %v; console:\n%s", e, out)
		}
		v, _ := strconv.ParseFloat(mm[1], 64)
		sum += v
	}
	b.ReportMetric(sum/float64(b.N), "guest-MiB/s")
}
