package corral

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
	"github.com/corral-vmm/corral/virtio/blk"
)

// TestSnapshotRestoreMultiqueueDisks snapshots a 2-vCPU machine with a disk
// of the default queue count (one per vCPU) and one of 3 queues; the
// restore rebuilds both with the counts the guest saw (the virtio PCI
// state refuses any other) and runs on.
func TestSnapshotRestoreMultiqueueDisks(t *testing.T) {
	testenv.MustHaveKVM(t)
	tmp := t.TempDir()
	var disks []Disk
	for i, q := range []int{0, 3} {
		p := filepath.Join(tmp, fmt.Sprintf("d%d.img", i))
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		disks = append(disks, Disk{Path: p, Queues: q})
	}
	dir := filepath.Join(tmp, "snap")
	m, out := bootGuest(t, Config{Kernel: guests.BuildT(t, "count"), Cmdline: fmt.Sprintf("step=%d limit=0", countStep),
		CPUs: 2, NoInventory: true, Disks: disks})
	waitCount(t, out, 2*countStep, "original")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := m.Pause(ctx); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	vals, _ := counts(settled(out))
	saved := vals[len(vals)-1]
	if err := m.Snapshot(ctx, dir); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	m.Close() // releases the images' locks for the restore
	rout := console.NewBuffer(0)
	r, err := Restore(ctx, dir, RestoreConfig{Console: rout, NoInventory: true})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	defer r.Close()
	for i, want := range []int{2, 3} {
		d, ok := r.plat.devs[i].(*blk.Device)
		if !ok {
			t.Fatalf("device %d is %T, want a disk", i, r.plat.devs[i])
		}
		if d.NumQueues() != want {
			t.Errorf("restored disk %d has %d queues; want %d", i, d.NumQueues(), want)
		}
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatalf("Start of the restore: %v", err)
	}
	waitCount(t, rout, saved, "restore")
}
