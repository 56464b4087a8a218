package guestmem

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestAllocateHugePageAligned: each range's host address agrees with its
// guest address modulo 2 MiB (else KVM never maps it with 2 MiB pages),
// ranges not starting on a 2 MiB boundary included.
func TestAllocateHugePageAligned(t *testing.T) {
	ranges := []Range{{GPA: 0, Size: 4 << 20}, {GPA: 5<<20 + 4096, Size: 3 << 20}, {GPA: 1 << 32, Size: 8192}}
	m, err := Allocate(ranges...)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, r := range m.Regions() {
		addr := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(r.Data))))
		if addr%HugePageSize != r.GPA%HugePageSize {
			t.Errorf("region at %#x: host address %#x, want %#x modulo 2 MiB", r.GPA, addr, r.GPA%HugePageSize)
		}
		r.Data[0], r.Data[len(r.Data)-1] = 1, 2 // mapped end to end
	}
}

// TestAllocateTransparentHugePages: where the host offers transparent
// huge pages ("always" or "madvise"), touched guest RAM gets them.
func TestAllocateTransparentHugePages(t *testing.T) {
	b, err := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	if err != nil || strings.Contains(string(b), "[never]") {
		t.Skipf("no transparent huge pages on this host (%q, %v)", b, err)
	}
	m, err := Allocate(Range{GPA: 0, Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	data := m.Regions()[0].Data
	for i := 0; i < len(data); i += 4096 {
		data[i] = 1
	}
	huge, err := anonHugeKiB(uint64(uintptr(unsafe.Pointer(unsafe.SliceData(data)))))
	if err != nil {
		t.Fatal(err)
	}
	// Some 2 MiB blocks may be unavailable on a busy host: want at least one.
	if huge < HugePageSize/1024 {
		t.Errorf("AnonHugePages of the 8 MiB guest RAM mapping: %d KiB, want at least 2048", huge)
	}
}

// anonHugeKiB returns the AnonHugePages of the mapping starting at addr,
// from /proc/self/smaps.
func anonHugeKiB(addr uint64) (uint64, error) {
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	start := fmt.Sprintf("%x-", addr)
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = strings.HasPrefix(l, start)
			continue
		}
		if in && strings.HasPrefix(l, "AnonHugePages:") {
			var kb uint64
			_, err := fmt.Sscanf(l, "AnonHugePages: %d kB", &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("no mapping at %#x in /proc/self/smaps", addr)
}
