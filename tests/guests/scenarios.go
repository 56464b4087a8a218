package guests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// A Scenario is one boot of a test guest, written once and run against
// Corral (the root package's TestBlkGuest) and QEMU (TestQEMUBlk): the
// guest, its disks, its command line, the console lines it must print and
// its exit code. What differs between the VMMs (PCI slots, who places the
// BARs, QEMU's exit status 2v+1) is left to the runners.
type Scenario struct {
	Name  string
	Guest string
	// Cmdline is the guest's command line; CmdlineFor adds slot=N.
	Cmdline string
	// Disks are virtio-blk disks, in the order the runner plugs them in.
	Disks []ScenarioDisk
	// Drive is the index in Disks of the disk the guest is told to drive
	// (slot=N with that disk's slot), or -1 for the first one it finds.
	Drive int
	// Lines must appear as whole console lines, in this order.
	Lines []string
	// Match must each match some console line.
	Match []*regexp.Regexp
	// Exit is the guest's exit code.
	Exit int
}

// ScenarioDisk is a disk image of a scenario: a text image (BlkImage) or,
// with SeqMiB > 0, a sequence image (SeqImage).
type ScenarioDisk struct {
	Text     string // what BlkImage puts in sector BlkReadSector
	SeqMiB   int    // the size of a SeqImage instead
	ReadOnly bool
	Serial   string // the device serial (VIRTIO_BLK_T_GET_ID); "" for none
	// Written is the sector the guest's write=W changes (BlkWritePattern);
	// 0: the guest writes nothing and the image must be unchanged.
	Written int
}

// Geometry of the blk scenarios' images.
const (
	BlkSector     = 512
	BlkImageSize  = 1 << 20
	BlkReadSector = 3 // the sector holding ScenarioDisk.Text
	BlkWriteSect  = 9 // the sector the rw scenario writes
	BlkSerial     = "corral-test"
	// BlkText is the text image's sector BlkReadSector in most scenarios.
	BlkText = "Corral virtio-blk test image, sector three: the quick brown fox!"
)

// BlkScenarios are the blk guest's scenarios.
func BlkScenarios() []Scenario {
	read := fmt.Sprintf("blk: sector %d: %s", BlkReadSector, BlkText)
	return []Scenario{{
		// Reads a known sector, writes another and reads it back, is refused
		// a read past the end, flushes and reads the serial.
		Name: "rw", Guest: "blk", Drive: -1, Exit: ExitOK,
		Cmdline: fmt.Sprintf("read=%d write=%d readpast=1 expect=rw", BlkReadSector, BlkWriteSect),
		Disks:   []ScenarioDisk{{Text: BlkText, Serial: BlkSerial, Written: BlkWriteSect}},
		Lines: []string{
			fmt.Sprintf("blk: capacity %d sectors (rw), flush yes, queue size 16", BlkImageSize/BlkSector),
			fmt.Sprintf("blk: sector %d hex: % x", BlkReadSector, []byte(BlkText[:16])),
			read,
			"blk: write status 0",
			fmt.Sprintf("blk: sector %d verified", BlkWriteSect),
			"blk: read past end status 1",
			"blk: flush status 0",
			"blk: serial " + BlkSerial,
			"blk: ok"},
	}, {
		// A read-only disk offers VIRTIO_BLK_F_RO and fails the write with
		// VIRTIO_BLK_S_IOERR; the image stays as it was.
		Name: "ro", Guest: "blk", Drive: -1, Exit: ExitOK,
		Cmdline: fmt.Sprintf("read=%d write=%d expect=ro", BlkReadSector, BlkWriteSect),
		Disks:   []ScenarioDisk{{Text: BlkText, ReadOnly: true, Serial: BlkSerial}},
		Lines: []string{
			fmt.Sprintf("blk: capacity %d sectors (ro), flush yes, queue size 16", BlkImageSize/BlkSector),
			read,
			"blk: write status 1",
			"blk: serial " + BlkSerial,
			"blk: ok"},
	}, {
		// The guest tells a writable disk from a read-only one, so "ro"
		// cannot pass on a writable device.
		Name: "expect-mismatch", Guest: "blk", Drive: -1, Exit: ExitBlkROMismatch,
		Cmdline: "expect=ro",
		Disks:   []ScenarioDisk{{Text: BlkText}},
		Lines:   []string{"blk: expected a ro disk"},
	}, {
		// Two disks; the guest drives the second by its slot.
		Name: "slot", Guest: "blk", Drive: 1, Exit: ExitOK,
		Cmdline: fmt.Sprintf("read=%d", BlkReadSector),
		Disks: []ScenarioDisk{{Text: "this is disk A", Serial: "disk-a"},
			{Text: "this is disk B", ReadOnly: true, Serial: "disk-b"}},
		Lines: []string{fmt.Sprintf("blk: sector %d: this is disk B", BlkReadSector), "blk: serial disk-b", "blk: ok"},
	}, {
		// A request with no status byte cannot be answered: the device must
		// set DEVICE_NEEDS_RESET (not hang, not crash the VMM) and serve
		// reads again after the guest resets it.
		Name: "badreq", Guest: "blk", Drive: -1, Exit: ExitOK,
		Cmdline: fmt.Sprintf("read=%d badreq=1", BlkReadSector),
		Disks:   []ScenarioDisk{{Text: BlkText}},
		Lines: []string{read, "virtio: queue 0: device needs reset (status 0x4f)",
			"blk: malformed request: device needs reset", read, "blk: recovered after reset", "blk: ok"},
	}, {
		// No virtio-blk function: the guest's own exit code and a line why.
		Name: "no-device", Guest: "blk", Drive: -1, Exit: ExitVirtioNoDevice,
		Lines: []string{"virtio: no device 0x1042 on bus 0"},
	}, {
		// 8 MiB in 64 KiB requests, four in flight, every request's first
		// and last sector numbers checked.
		Name: "seqread", Guest: "blk", Drive: -1, Exit: ExitOK,
		Cmdline: "seqread=8 reqkb=64 depth=4 seqcheck=1",
		Disks:   []ScenarioDisk{{SeqMiB: 8, ReadOnly: true}},
		Lines:   []string{"blk: ok"},
		Match:   []*regexp.Regexp{regexp.MustCompile(`^blk: seqread 8 MiB, 128 requests of 64 KiB, depth 4: \d+ ticks, \d+ us, [0-9.]+ MiB/s`)},
	}}
}

// CmdlineFor is Cmdline with slot=N in front when the scenario drives a
// given disk; slot maps a disk's index to the PCI slot the runner gave it.
func (s Scenario) CmdlineFor(slot func(disk int) int) string {
	if s.Drive < 0 {
		return s.Cmdline
	}
	return strings.TrimSpace(fmt.Sprintf("slot=%d %s", slot(s.Drive), s.Cmdline))
}

// DriveIndex is the index of the disk the guest drives: Drive, or the
// first disk (the lowest slot) when Drive is -1.
func (s Scenario) DriveIndex() int { return max(s.Drive, 0) }

// CheckConsole checks that the console lines (ConsoleLines) hold Lines in
// order and a match for each of Match.
func (s Scenario) CheckConsole(lines []string) error {
	i := 0
	for _, l := range lines {
		if i < len(s.Lines) && l == s.Lines[i] {
			i++
		}
	}
	if i < len(s.Lines) {
		return fmt.Errorf("console lacks the line %q (in order)", s.Lines[i])
	}
	for _, re := range s.Match {
		found := false
		for _, l := range lines {
			found = found || re.MatchString(l)
		}
		if !found {
			return fmt.Errorf("no console line matches %s", re)
		}
	}
	return nil
}

// ConsoleLines splits serial output into lines without CR or a final empty line.
func ConsoleLines(console string) []string {
	s := strings.TrimSuffix(strings.ReplaceAll(console, "\r", ""), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// Image is the disk's content before the run.
func (d ScenarioDisk) Image() []byte {
	if d.SeqMiB > 0 {
		return SeqImage(d.SeqMiB)
	}
	return BlkImage(d.Text)
}

// WriteImage writes Image to path.
func (d ScenarioDisk) WriteImage(path string) error {
	if err := os.WriteFile(path, d.Image(), 0o644); err != nil {
		return fmt.Errorf("guests: disk image: %w", err)
	}
	return nil
}

// CheckImage checks that the file at path holds what the guest should have
// left: Image with, if Written is set, BlkWritePattern in that sector.
func (d ScenarioDisk) CheckImage(path string) error {
	got, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("guests: disk image after the run: %w", err)
	}
	want := d.Image()
	if d.Written > 0 {
		copy(want[d.Written*BlkSector:], BlkWritePattern(d.Written))
	}
	if len(got) != len(want) {
		return fmt.Errorf("%s is %d bytes after the run, want %d", path, len(got), len(want))
	}
	for s := 0; s < len(want)/BlkSector; s++ {
		g, w := got[s*BlkSector:(s+1)*BlkSector], want[s*BlkSector:(s+1)*BlkSector]
		if !bytes.Equal(g, w) {
			return fmt.Errorf("%s sector %d after the run: %q..., want %q...", path, s, g[:32], w[:32])
		}
	}
	return nil
}

// BlkImage is a BlkImageSize image whose sector i is filled with byte
// i mod 251, except sector BlkReadSector, which holds text and a NUL.
func BlkImage(text string) []byte {
	img := make([]byte, BlkImageSize)
	for i := range img {
		img[i] = byte((i / BlkSector) % 251)
	}
	s := img[BlkReadSector*BlkSector : (BlkReadSector+1)*BlkSector]
	clear(s)
	copy(s, text)
	return img
}

// BlkWritePattern is what the blk guest's write=W puts in sector W: the
// text "corral-blk-write W", a NUL, and byte i = i & 0xff after it.
func BlkWritePattern(w int) []byte {
	b := make([]byte, BlkSector)
	for i := range b {
		b[i] = byte(i)
	}
	n := copy(b, fmt.Sprintf("corral-blk-write %d", w))
	b[n] = 0
	return b
}

// SeqImage is an image of mib MiB whose every sector starts with its
// sector number (le64), what the blk guest's seqcheck=1 verifies.
func SeqImage(mib int) []byte {
	img := make([]byte, mib<<20)
	for s := 0; s < len(img)/BlkSector; s++ {
		binary.LittleEndian.PutUint64(img[s*BlkSector:], uint64(s))
	}
	return img
}
