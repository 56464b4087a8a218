package guests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestBlkScenariosWellFormed(t *testing.T) {
	seen := map[string]bool{}
	for _, sc := range BlkScenarios() {
		if sc.Name == "" || seen[sc.Name] {
			t.Errorf("scenario name %q empty or repeated", sc.Name)
		}
		seen[sc.Name] = true
		if sc.Drive < -1 || sc.Drive >= max(len(sc.Disks), 1) || (sc.Drive >= 0 && len(sc.Disks) == 0) {
			t.Errorf("%s: Drive %d with %d disks", sc.Name, sc.Drive, len(sc.Disks))
		}
		if len(sc.Lines)+len(sc.Match) == 0 {
			t.Errorf("%s: checks no console line", sc.Name)
		}
		if _, ok := guestSources(sc.Guest); !ok {
			t.Errorf("%s: unknown guest %q", sc.Name, sc.Guest)
		}
	}
}

func TestCmdlineFor(t *testing.T) {
	slot := func(i int) int { return 10 + i }
	if got := (Scenario{Cmdline: "read=3", Drive: 1}).CmdlineFor(slot); got != "slot=11 read=3" {
		t.Errorf("Drive 1: %q", got)
	}
	if got := (Scenario{Drive: 0}).CmdlineFor(slot); got != "slot=10" {
		t.Errorf("Drive 0, no cmdline: %q", got)
	}
	if got := (Scenario{Cmdline: "x=1", Drive: -1}).CmdlineFor(slot); got != "x=1" {
		t.Errorf("Drive -1: %q", got)
	}
	if (Scenario{Drive: -1}).DriveIndex() != 0 || (Scenario{Drive: 2}).DriveIndex() != 2 {
		t.Error("DriveIndex")
	}
}

func TestCheckConsole(t *testing.T) {
	sc := Scenario{Lines: []string{"a", "b", "a"}, Match: []*regexp.Regexp{regexp.MustCompile(`^n=\d+$`)}}
	lines := ConsoleLines("a\r\nx\r\nb\r\nn=42\r\na\r\n")
	if len(lines) != 5 || lines[4] != "a" {
		t.Fatalf("ConsoleLines = %q", lines)
	}
	if err := sc.CheckConsole(lines); err != nil {
		t.Errorf("in order: %v", err)
	}
	for _, bad := range []string{"a\nb\nn=42\n", "b\na\na\nn=42\n", "a\nb\na\nn=x\n", "a\nb\nab\nn=1\n"} {
		if err := sc.CheckConsole(ConsoleLines(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if ConsoleLines("") != nil || ConsoleLines("\r\n") != nil || len(ConsoleLines("x\n\ny")) != 3 {
		t.Error("ConsoleLines of empty output")
	}
}

func TestScenarioDiskImage(t *testing.T) {
	d := ScenarioDisk{Text: "hello", Written: 9}
	img := d.Image()
	if len(img) != BlkImageSize || string(img[BlkReadSector*BlkSector:][:6]) != "hello\x00" || img[BlkSector*5] != 5 {
		t.Fatal("BlkImage layout")
	}
	p := filepath.Join(t.TempDir(), "d.img")
	if err := d.WriteImage(p); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckImage(p); err == nil || !strings.Contains(err.Error(), "sector 9") {
		t.Errorf("unwritten sector 9 passed: %v", err)
	}
	copy(img[9*BlkSector:], BlkWritePattern(9))
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckImage(p); err != nil {
		t.Errorf("the guest's write: %v", err)
	}
	if err := (ScenarioDisk{Text: "hello"}).CheckImage(p); err == nil {
		t.Error("a write to a disk that must be unchanged passed")
	}
	if err := os.WriteFile(p, img[:BlkSector], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckImage(p); err == nil {
		t.Error("a truncated image passed")
	}
	seq := (ScenarioDisk{SeqMiB: 1}).Image()
	if len(seq) != 1<<20 || seq[BlkSector*7] != 7 || seq[BlkSector*256+1] != 1 {
		t.Error("SeqImage layout")
	}
	if p := BlkWritePattern(12); string(p[:17]) != "corral-blk-write " || string(p[17:20]) != "12\x00" || p[200] != 200 {
		t.Errorf("BlkWritePattern = %q", p[:24])
	}
}
