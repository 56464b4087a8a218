package boot

import (
	"encoding/binary"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

// translate walks the 4-level page tables at cr3 as the CPU would for a
// 2 MiB mapping; ok is false if any level is not present.
func translate(t *testing.T, mem *guestmem.Memory, cr3, va uint64) (uint64, bool) {
	t.Helper()
	table := cr3
	for level, shift := range []uint{39, 30, 21} {
		e, err := mem.Uint64(table + (va>>shift&511)*8)
		if err != nil {
			t.Fatalf("page table entry at %#x: %v", table, err)
		}
		if e&pteP == 0 {
			return 0, false
		}
		if e&pteRW == 0 {
			t.Errorf("level %d entry %#x is read-only", level, e)
		}
		if level == 2 {
			if e&ptePS == 0 {
				t.Fatalf("PD entry %#x for %#x is not a 2 MiB page", e, va)
			}
			return e&^uint64(largePageSize-1)&(1<<52-1) | va&(largePageSize-1), true
		}
		if e&ptePS != 0 {
			t.Fatalf("level %d entry %#x has PS set", level, e)
		}
		table = e &^ 0xfff & (1<<52 - 1)
	}
	return 0, false
}

func TestPageTablesIdentityMapFirst4GiB(t *testing.T) {
	mem := newMem(t, 16<<20)
	// Dirty the table pages: stale entries must not survive.
	for a := uint64(PML4Addr); a < PDAddr+4*pageSize; a += 8 {
		if err := mem.PutUint64(a, 0xdeadbeef000|pteP); err != nil {
			t.Fatal(err)
		}
	}
	if err := writePageTables(mem); err != nil {
		t.Fatal(err)
	}
	for _, va := range []uint64{0, 0x1000, KernelAddr + 0x200, 0x1234567, 1<<30 - 1, 1 << 30, 0xc0000000, 0xfee00000, 1<<32 - 1} {
		pa, ok := translate(t, mem, PML4Addr, va)
		if !ok || pa != va {
			t.Errorf("va %#x -> %#x (mapped %v), want identity", va, pa, ok)
		}
	}
	for _, va := range []uint64{1 << 32, 1 << 39, 0xffffffff80000000} {
		if pa, ok := translate(t, mem, PML4Addr, va); ok {
			t.Errorf("va %#x mapped to %#x, want unmapped", va, pa)
		}
	}
	pml4 := mustRead(t, mem, PML4Addr, 16)
	if binary.LittleEndian.Uint64(pml4) != PDPTAddr|3 || binary.LittleEndian.Uint64(pml4[8:]) != 0 {
		t.Errorf("PML4[0..1] = % x", pml4)
	}
	if e, _ := mem.Uint64(PDAddr + 3*pageSize + 511*8); e != (1<<32-largePageSize)|0x83 {
		t.Errorf("last PD entry %#x, want %#x", e, uint64(1<<32-largePageSize)|0x83)
	}
}
