package boot

import (
	"encoding/binary"
	"fmt"
)

// E820Type is an e820 / PVH memory map range type.
type E820Type uint32

// e820 range types (ACPI address range types).
const (
	E820RAM      E820Type = 1
	E820Reserved E820Type = 2
	E820ACPI     E820Type = 3 // ACPI reclaimable
	E820NVS      E820Type = 4
)

// E820Entry is one range of the guest's memory map.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type E820Type
}

const (
	e820EntrySize  = 20  // struct boot_e820_entry: addr, size, type
	e820MaxEntries = 128 // E820_MAX_ENTRIES_ZEROPAGE
)

// E820 returns the guest memory map for ramSize bytes of RAM laid out by
// RAMRanges, for both boot protocols: RAM below the EBDA, the EBDA, legacy
// hole and BIOS area reserved up to 1 MiB (the MP table and ACPI tables live
// there), RAM from 1 MiB to the end of low RAM, and RAM above 4 GiB if any.
func E820(ramSize uint64) ([]E820Entry, error) {
	if ramSize < MinRAM {
		return nil, fmt.Errorf("%w: %d bytes of guest RAM, need at least %d", ErrBadConfig, ramSize, uint64(MinRAM))
	}
	ranges := RAMRanges(ramSize)
	low := ranges[0]
	m := []E820Entry{
		{Addr: 0, Size: EBDAAddr, Type: E820RAM},
		{Addr: EBDAAddr, Size: KernelAddr - EBDAAddr, Type: E820Reserved},
		{Addr: KernelAddr, Size: low.Size - KernelAddr, Type: E820RAM},
	}
	for _, r := range ranges[1:] {
		m = append(m, E820Entry{Addr: r.GPA, Size: r.Size, Type: E820RAM})
	}
	return m, nil
}

// encodeE820 encodes m as boot_params' e820_table entries.
func encodeE820(m []E820Entry) []byte {
	b := make([]byte, len(m)*e820EntrySize)
	for i, e := range m {
		o := b[i*e820EntrySize:]
		binary.LittleEndian.PutUint64(o[0:], e.Addr)
		binary.LittleEndian.PutUint64(o[8:], e.Size)
		binary.LittleEndian.PutUint32(o[16:], uint32(e.Type))
	}
	return b
}
