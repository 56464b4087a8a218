package corral

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// pausedCounter boots the count guest with mem bytes of RAM, lets it print
// a line and pauses it.
func pausedCounter(tb testing.TB, mem uint64) *Machine {
	tb.Helper()
	k := guests.BuildT(tb, "count")
	out := console.NewBuffer(0)
	m, err := New(Config{Kernel: k, Memory: mem, Cmdline: fmt.Sprintf("step=%d", countStep), Console: out, NoInventory: true})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	if err := m.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := out.WaitFor(ctx, " mem ok"); err != nil {
		tb.Fatalf("count guest: %v; console:\n%s", err, out)
	}
	if err := m.Pause(ctx); err != nil {
		tb.Fatal(err)
	}
	return m
}

// diskBytes is what a file occupies on disk.
func diskBytes(tb testing.TB, path string) int64 {
	tb.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		tb.Fatal(err)
	}
	return st.Blocks * 512
}

// touch writes n bytes of non-zero data into guest RAM from 16 MiB up, as
// a guest that used that much memory would have.
func touch(tb testing.TB, m *Machine, n uint64) {
	tb.Helper()
	page := make([]byte, 4096)
	for i := range page {
		page[i] = byte(i*7 + 1)
	}
	for off := uint64(0); off < n; off += uint64(len(page)) {
		if err := m.mem.WriteAt(page, 16<<20+off); err != nil {
			tb.Fatal(err)
		}
	}
}

// TestSnapshotMemoryIsSparse: a 512 MiB guest that touched 64 MiB gives a
// memory file of about 64 MiB on disk (issue 13).
func TestSnapshotMemoryIsSparse(t *testing.T) {
	testenv.MustHaveKVM(t)
	m := pausedCounter(t, 512<<20)
	touch(t, m, 64<<20)
	dir := filepath.Join(t.TempDir(), "snap")
	if err := m.Snapshot(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "memory"))
	if err != nil {
		t.Fatal(err)
	}
	used := diskBytes(t, filepath.Join(dir, "memory"))
	t.Logf("memory file: %d MiB long, %.1f MiB on disk", st.Size()>>20, float64(used)/(1<<20))
	if used < 64<<20 || used > 72<<20 {
		t.Errorf("memory file occupies %d bytes on disk, want about 64 MiB", used)
	}
}

// BenchmarkRestore is Restore plus Start of one snapshot of the count
// guest, for 64 MiB and 4 GiB of guest RAM: restore time must not grow
// with guest RAM (issue 13: within 2x).
func BenchmarkRestore(b *testing.B) {
	testenv.MustHaveKVM(b)
	for _, mem := range []uint64{64 << 20, 4 << 30} {
		b.Run(FormatSize(mem), func(b *testing.B) {
			m := pausedCounter(b, mem)
			dir := filepath.Join(b.TempDir(), "snap")
			if err := m.Snapshot(context.Background(), dir); err != nil {
				b.Fatal(err)
			}
			m.Close()
			b.ResetTimer()
			for b.Loop() {
				r, err := Restore(context.Background(), dir, RestoreConfig{NoInventory: true})
				if err != nil {
					b.Fatal(err)
				}
				if err := r.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				r.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkSnapshot512M snapshots a paused 512 MiB guest that touched 64
// MiB and reports the memory file's size on disk.
func BenchmarkSnapshot512M(b *testing.B) {
	testenv.MustHaveKVM(b)
	m := pausedCounter(b, 512<<20)
	touch(b, m, 64<<20)
	var used int64
	i := 0
	for b.Loop() {
		dir := filepath.Join(b.TempDir(), fmt.Sprint("snap", i))
		i++
		if err := m.Snapshot(context.Background(), dir); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		used = diskBytes(b, filepath.Join(dir, "memory"))
		os.RemoveAll(dir)
		b.StartTimer()
	}
	b.ReportMetric(float64(used)/(1<<20), "disk-MiB")
}
