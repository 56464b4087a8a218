package corral

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/virtio/blk"
)

func TestParseDiskQueuesDirect(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Disk
	}{
		{"a.img", Disk{Path: "a.img"}},
		{"a.img,queues=1", Disk{Path: "a.img", Queues: 1}},
		{"a.img,queues=64,direct", Disk{Path: "a.img", Queues: 64, Direct: true}},
		{"a.img,direct,ro,serial=s", Disk{Path: "a.img", Direct: true, ReadOnly: true, Serial: "s"}},
	} {
		if got, err := ParseDisk(c.in); err != nil || got != c.want {
			t.Errorf("ParseDisk(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, s := range []string{"a.img,queues=0", "a.img,queues=65", "a.img,queues=x", "a.img,queues=", "a.img,queues=-1", "a.img,odirect"} {
		if d, err := ParseDisk(s); err == nil {
			t.Errorf("ParseDisk(%q) = %+v, accepted", s, d)
		}
	}
}

func TestDiskQueuesDefault(t *testing.T) {
	for _, c := range []struct {
		d    Disk
		cpus int
		want int
	}{
		{Disk{}, 1, 1},
		{Disk{}, 4, 4},
		{Disk{}, MaxCPUs, blk.MaxQueues},
		{Disk{Queues: 2}, 8, 2},
		{Disk{Queues: 8}, 1, 8},
	} {
		if got := c.d.queues(c.cpus); got != c.want {
			t.Errorf("%+v on %d vCPUs: %d queues; want %d", c.d, c.cpus, got, c.want)
		}
	}
	for _, q := range []int{-1, blk.MaxQueues + 1} {
		if err := (Disk{Queues: q}).checkQueues(); err == nil {
			t.Errorf("%d queues accepted", q)
		}
	}
	if err := (Disk{Queues: blk.MaxQueues}).checkQueues(); err != nil {
		t.Errorf("%d queues refused: %v", blk.MaxQueues, err)
	}
}

func TestValidateDiskQueues(t *testing.T) {
	img := filepath.Join(t.TempDir(), "d.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Config{Disks: []Disk{{Path: img, Queues: blk.MaxQueues + 1}}}
	if err := c.validateDevices(); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "queues") {
		t.Fatalf("validateDevices with %d queues: %v", blk.MaxQueues+1, err)
	}
	c.Disks[0].Queues = 0
	if err := c.validateDevices(); err != nil {
		t.Fatalf("validateDevices with the default queues: %v", err)
	}
}

// A snapshot records each disk's queue count as the guest saw it (one per
// vCPU by default), and the restore keeps it; snapshots from before disks
// had queues per vCPU restore with one. O_DIRECT is the restorer's choice
// when it gives the disks.
func TestSnapshotDiskQueues(t *testing.T) {
	m := &Machine{cfg: Config{Kernel: "/k", CPUs: 3, Disks: []Disk{
		{Path: "/a.img"}, {Path: "/b.img", Queues: 2, Direct: true, ReadOnly: true, Serial: "b"},
	}}, plat: &platform{}}
	sm, back, b := saveAndDecode(t, m)
	want := []Disk{{Path: "/a.img", Queues: 3}, {Path: "/b.img", Queues: 2, Direct: true, ReadOnly: true, Serial: "b"}}
	if len(sm.Disks) != 2 || sm.Disks[0] != want[0] || sm.Disks[1] != want[1] {
		t.Fatalf("saved disks %+v; want %+v", sm.Disks, want)
	}
	c, err := back.config(RestoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Disks[0] != want[0] || c.Disks[1] != want[1] {
		t.Fatalf("restored disks %+v; want %+v", c.Disks, want)
	}
	// The restorer gives new paths and no O_DIRECT: queues, mode and
	// serial stay as saved.
	c, err = back.config(RestoreConfig{Disks: []Disk{{Path: "/a2.img", Queues: 7, Direct: true}, {Path: "/b2.img", Queues: 7}}})
	if err != nil {
		t.Fatal(err)
	}
	want2 := []Disk{{Path: "/a2.img", Queues: 3, Direct: true}, {Path: "/b2.img", Queues: 2, ReadOnly: true, Serial: "b"}}
	if c.Disks[0] != want2[0] || c.Disks[1] != want2[1] {
		t.Fatalf("restored disks with RestoreConfig.Disks %+v; want %+v", c.Disks, want2)
	}
	// A snapshot taken before: no queue count, one queue.
	old := strings.Replace(string(b), `,"Queues":3`, "", 1)
	if old == string(b) {
		t.Fatalf("no queue count in the saved machine: %s", b)
	}
	var prev savedMachine
	if err := json.Unmarshal([]byte(old), &prev); err != nil {
		t.Fatal(err)
	}
	if c, err = prev.config(RestoreConfig{}); err != nil || c.Disks[0].Queues != 1 {
		t.Fatalf("an old snapshot's disk restores with %d queues (%v); want 1", c.Disks[0].Queues, err)
	}
}

// saveAndDecode is m's machine section as saved, as JSON, and decoded
// again, as a restore reads it.
func saveAndDecode(t *testing.T, m *Machine) (sm *savedMachine, back savedMachine, b []byte) {
	t.Helper()
	sm, err := m.savedMachine()
	if err != nil {
		t.Fatal(err)
	}
	if b, err = json.Marshal(sm); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	return sm, back, b
}
