package corral

import (
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/guestmem"
)

// hostMapping is a range [lo, hi) of this process's address space.
type hostMapping struct {
	lo, hi uint64
	path   string // as /proc/self/maps names it: "" for anonymous memory
}

// kvmInode prefixes the name of every mapping of a KVM object (kvm_run is
// "anon_inode:kvm-vcpu:N"); nothing but a machine maps one.
const kvmInode = "anon_inode:kvm"

// hostMappings returns what m mapped: its guest RAM regions and each vCPU's
// kvm_run. Call it between New and Close.
func (m *Machine) hostMappings() []hostMapping {
	r := ramMappings(m.mem)
	for _, v := range m.vcpus {
		a, n := v.RunMapping()
		r = append(r, hostMapping{lo: uint64(a), hi: uint64(a) + uint64(n), path: kvmInode})
	}
	return r
}

// ramMappings returns the host ranges backing guest RAM (anonymous memory).
func ramMappings(mem *guestmem.Memory) []hostMapping {
	var r []hostMapping
	for _, reg := range mem.Regions() {
		a := uint64(reflect.ValueOf(reg.Data).Pointer())
		r = append(r, hostMapping{lo: a, hi: a + uint64(len(reg.Data))})
	}
	return r
}

// parseMaps reads /proc/PID/maps: "lo-hi perms offset dev inode [path]".
func parseMaps(text string) ([]hostMapping, error) {
	var maps []hostMapping
	for i, line := range strings.Split(text, "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 5 {
			return nil, fmt.Errorf("maps line %d: %d fields in %q", i+1, len(f), line)
		}
		los, his, ok := strings.Cut(f[0], "-")
		lo, err1 := strconv.ParseUint(los, 16, 64)
		hi, err2 := strconv.ParseUint(his, 16, 64)
		if !ok || err1 != nil || err2 != nil || hi <= lo {
			return nil, fmt.Errorf("maps line %d: bad range in %q", i+1, line)
		}
		maps = append(maps, hostMapping{lo: lo, hi: hi, path: strings.Join(f[5:], " ")})
	}
	return maps, nil
}

// stillMapped returns the ranges in want that maps still holds. Once a
// machine is gone the process may map other things where its memory was,
// so a range counts as still mapped only where it can be the machine's own:
// a KVM range overlapped by any KVM object (only machines map those), a
// guest-RAM range wholly inside one anonymous mapping (the kernel may have
// merged a leaked one with a neighbour; the Go runtime's later mappings
// there are far smaller than guest RAM).
func stillMapped(maps, want []hostMapping) []hostMapping {
	var left []hostMapping
	for _, w := range want {
		for _, m := range maps {
			kvm := strings.HasPrefix(w.path, kvmInode)
			if kvm && strings.HasPrefix(m.path, kvmInode) && m.lo < w.hi && w.lo < m.hi ||
				!kvm && m.path == "" && m.lo <= w.lo && w.hi <= m.hi {
				left = append(left, w)
				break
			}
		}
	}
	return left
}

func readMaps(t *testing.T) []hostMapping {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	maps, err := parseMaps(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return maps
}

// resources counts what machines hold in this process: open descriptors,
// mappings of KVM objects and goroutines. Guest RAM is checked by address
// (stillMapped): other anonymous mappings come and go with the runtime.
type resources struct{ fds, kvmMaps, goroutines int }

func countResources(t *testing.T) resources {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range readMaps(t) {
		if strings.HasPrefix(m.path, kvmInode) {
			n++
		}
	}
	return resources{len(fds), n, runtime.NumGoroutine()}
}

// settle waits briefly for goroutines that are finishing to be gone.
func settle(t *testing.T, base resources) resources {
	var r resources
	for i := 0; i < 100; i++ {
		r = countResources(t)
		if r.goroutines <= base.goroutines && r.fds <= base.fds && r.kvmMaps <= base.kvmMaps {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return r
}

func TestParseMaps(t *testing.T) {
	const text = `00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
7f2c4a000000-7f2c4c800000 rw-p 00000000 00:00 0 
7f2c4c800000-7f2c4c803000 rw-s 00000000 00:0e 11   anon_inode:kvm-vcpu:0
7ffd1c9b0000-7ffd1c9d1000 rw-p 00000000 00:00 0      [stack]
7f2c4d000000-7f2c4d001000 r--p 00000000 08:02 99    /tmp/a name with spaces
`
	got, err := parseMaps(text)
	if err != nil {
		t.Fatal(err)
	}
	want := []hostMapping{
		{0x400000, 0x452000, "/usr/bin/dbus-daemon"},
		{0x7f2c4a000000, 0x7f2c4c800000, ""},
		{0x7f2c4c800000, 0x7f2c4c803000, "anon_inode:kvm-vcpu:0"},
		{0x7ffd1c9b0000, 0x7ffd1c9d1000, "[stack]"},
		{0x7f2c4d000000, 0x7f2c4d001000, "/tmp/a name with spaces"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parseMaps =\n%v\nwant\n%v", got, want)
	}
	for _, bad := range []string{"7f00-7e00 rw-p 0 00:00 0\n", "zz-7e00 rw-p 0 00:00 0\n", "7f00 rw-p 0 00:00 0\n", "7f00-8000 rw-p\n"} {
		if _, err := parseMaps(bad); err == nil {
			t.Errorf("parseMaps(%q) accepted", bad)
		}
	}

	ram := hostMapping{0x7f2c4a000000, 0x7f2c4c800000, ""}
	run := hostMapping{0x7f2c4c800000, 0x7f2c4c803000, kvmInode}
	for _, c := range []struct {
		name string
		maps []hostMapping
		want int // how many of ram, run are still mapped
	}{
		{"both there", got, 2},
		{"both gone", []hostMapping{{0x400000, 0x452000, "/usr/bin/dbus-daemon"}}, 0},
		{"RAM merged with a neighbour", []hostMapping{{0x7f2c49000000, 0x7f2c4c800000, ""}}, 1},
		{"a small runtime mapping in the freed RAM", []hostMapping{{0x7f2c4c7f0000, 0x7f2c4c800000, ""}}, 0},
		{"a file mapped over the freed RAM", []hostMapping{{0x7f2c4a000000, 0x7f2c4c800000, "/x"}}, 0},
		{"anonymous memory where kvm_run was", []hostMapping{{0x7f2c4c800000, 0x7f2c4c810000, ""}}, 0},
		{"part of kvm_run still mapped", []hostMapping{{0x7f2c4c802000, 0x7f2c4c803000, "anon_inode:kvm-vcpu:3"}}, 1},
	} {
		if left := stillMapped(c.maps, []hostMapping{ram, run}); len(left) != c.want {
			t.Errorf("%s: still mapped %v, want %d of them", c.name, left, c.want)
		}
	}
}

// TestStillMappedGuestRAM checks the leak check against the real
// /proc/self/maps: guest RAM from guestmem.Allocate is found while it is
// mapped and not after Close. It needs no KVM.
func TestStillMappedGuestRAM(t *testing.T) {
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: lifecycleMemory}, guestmem.Range{GPA: 1 << 32, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ram := ramMappings(mem)
	if len(ram) != 2 || ram[0].hi-ram[0].lo != lifecycleMemory {
		t.Fatalf("ramMappings = %v", ram)
	}
	if left := stillMapped(readMaps(t), ram); len(left) != 2 {
		mem.Close()
		t.Fatalf("mapped guest RAM %v: only %v found in /proc/self/maps", ram, left)
	}
	if err := mem.Close(); err != nil {
		t.Fatal(err)
	}
	if left := stillMapped(readMaps(t), ram); len(left) != 0 {
		t.Errorf("after Close, %v still mapped", left)
	}
}
