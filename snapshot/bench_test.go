package snapshot

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

// BenchmarkMapMemory times MapMemory and Close of the map for snapshots of
// a 64 MiB and a 4 GiB guest (one page in every 2 MiB touched): the cost
// must not grow with guest RAM, since nothing of the file is read.
func BenchmarkMapMemory(b *testing.B) {
	for _, size := range []uint64{64 << 20, 4 << 30} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: size})
			if err != nil {
				b.Fatal(err)
			}
			data := mem.Regions()[0].Data
			for off := uint64(0); off < size; off += 2 << 20 {
				data[off] = 1
			}
			dir := filepath.Join(b.TempDir(), "s")
			w, err := Create(dir)
			if err != nil {
				b.Fatal(err)
			}
			if err := w.WriteMemory(mem); err != nil {
				b.Fatal(err)
			}
			if err := w.Commit(); err != nil {
				b.Fatal(err)
			}
			mem.Close()
			s, err := Open(dir)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				m, err := s.MapMemory()
				if err != nil {
					b.Fatal(err)
				}
				if err := m.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
