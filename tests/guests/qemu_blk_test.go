package guests

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// The blk guest under QEMU's virtio-blk-pci (modern only) proves the guest's
// virtio driver independently of Corral: TestQEMUBlk runs BlkScenarios, the
// scenarios the root package's TestBlkGuest runs under Corral. -M pc with
// qboot: qboot enables memory decode but leaves BARs at 0, so the guest
// places BAR 4 itself (and says so with a "pci: ... assigned" line).

func needQBoot(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(qbootROM); err != nil {
		testenv.Missing(t, testenv.QEMU, "%s missing (apt-get install -y qemu-system-data): -M pc would spend seconds in SeaBIOS", qbootROM)
	}
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

// qemuBlkSlot is the PCI slot of a scenario's disk i under -M pc, whose
// slot 1 is the PIIX3.
func qemuBlkSlot(i int) int { return 4 + 2*i }

func TestQEMUBlk(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	placed := regexp.MustCompile(`^pci: 00:[0-9a-f]{2}\.0 BAR 4 assigned 0x[0-9a-f]+ \(size 0x4000\)$`)
	for _, sc := range BlkScenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			kernel := BuildT(t, sc.Guest)
			dir := t.TempDir()
			var extra, paths []string
			for i, d := range sc.Disks {
				p := filepath.Join(dir, fmt.Sprintf("disk%d.img", i))
				if err := d.WriteImage(p); err != nil {
					t.Fatal(err)
				}
				paths = append(paths, p)
				opts := []string{fmt.Sprintf("addr=%d", qemuBlkSlot(i))}
				if d.ReadOnly {
					opts = append(opts, "readonly=on")
				}
				if d.Serial != "" {
					opts = append(opts, "serial="+d.Serial)
				}
				extra = append(extra, qemuDisk(fmt.Sprintf("d%d", i), p, opts...)...)
			}
			lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel,
				cmdline: sc.CmdlineFor(qemuBlkSlot), extra: extra})
			if want := QEMUStatus(sc.Exit); status != want {
				t.Errorf("qemu status %d, want %d (guest exit %d)", status, want, sc.Exit)
			}
			wantReadyFirst(t, lines)
			if err := sc.CheckConsole(lines); err != nil {
				t.Error(err)
			}
			if len(sc.Disks) > 0 {
				dev := regexp.MustCompile(fmt.Sprintf(`^virtio: 00:%02x\.0 dev 0x1042 bar 4 at 0x[0-9a-f]+$`, qemuBlkSlot(sc.DriveIndex())))
				if !slices.ContainsFunc(lines, dev.MatchString) {
					t.Errorf("no line matching %s", dev)
				}
				if !slices.ContainsFunc(lines, placed.MatchString) {
					t.Error("no BAR placement line (qboot leaves BARs unassigned)")
				}
			}
			for i, d := range sc.Disks {
				if err := d.CheckImage(paths[i]); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
