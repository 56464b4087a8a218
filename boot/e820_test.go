package boot

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

func TestE820(t *testing.T) {
	low := func(end uint64) []E820Entry {
		return []E820Entry{
			{0, 0x9fc00, E820RAM},
			{0x9fc00, 0x100000 - 0x9fc00, E820Reserved},
			{0x100000, end - 0x100000, E820RAM},
		}
	}
	cases := []struct {
		size uint64
		want []E820Entry
	}{
		{64 << 20, low(64 << 20)},
		{MinRAM, low(MinRAM)},
		{MMIOBase, low(MMIOBase)},
		{4 << 30, append(low(MMIOBase), E820Entry{1 << 32, 1 << 30, E820RAM})},
	}
	for _, c := range cases {
		got, err := E820(c.size)
		if err != nil {
			t.Fatalf("E820(%#x): %v", c.size, err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("E820(%#x) = %+v, want %+v", c.size, got, c.want)
		}
	}
	if _, err := E820(MinRAM - 4096); !errors.Is(err, ErrBadConfig) {
		t.Errorf("E820 below MinRAM: %v", err)
	}
}

func TestLoadHighMemory(t *testing.T) {
	// 3 GiB low + 16 MiB above 4 GiB; MAP_NORESERVE keeps this cheap.
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: MMIOBase}, guestmem.Range{GPA: HighRAMStart, Size: 16 << 20})
	if err != nil {
		t.Skipf("cannot reserve 3 GiB of address space for the test: %v", err)
	}
	defer mem.Close()
	o := bzDefaults()
	o.initrdMax = 0xffffffff
	if _, err := loadBytes(mem, makeBzImage(o), make([]byte, 3*4096+1), "", 1); err != nil {
		t.Fatal(err)
	}
	zp := mustRead(t, mem, ZeroPageAddr, zeroPageSize)
	if n := zp[zpE820EntriesOff]; n != 4 {
		t.Fatalf("e820_entries %d, want 4", n)
	}
	last := zp[zpE820TableOff+3*20:]
	if a, s, ty := binary.LittleEndian.Uint64(last), binary.LittleEndian.Uint64(last[8:]), binary.LittleEndian.Uint32(last[16:]); a != 1<<32 || s != 16<<20 || ty != 1 {
		t.Errorf("e820[3] = %#x+%#x type %d, want RAM at 4 GiB", a, s, ty)
	}
	// The initrd stays below the MMIO hole, page-aligned.
	if v := binary.LittleEndian.Uint32(zp[ramdiskImageOff:]); v != MMIOBase-4*4096 {
		t.Errorf("ramdisk_image %#x, want %#x", v, MMIOBase-4*4096)
	}
}
