package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
)

// struct boot_params offsets outside the setup header
// (arch/x86/include/uapi/asm/bootparam.h).
const (
	zpACPIRSDPAddrOff    = 0x070
	zpExtRamdiskImageOff = 0x0c0
	zpExtRamdiskSizeOff  = 0x0c4
	zpExtCmdLinePtrOff   = 0x0c8
	zpE820EntriesOff     = 0x1e8
	zpE820TableOff       = 0x2d0
	zeroPageSize         = 0x1000
)

// zeroPage is what goes into struct boot_params for a bzImage.
type zeroPage struct {
	hdr                    *setupHeader
	initrdAddr, initrdSize uint64
	e820                   []E820Entry
	rsdp                   uint64 // 0: no ACPI tables
}

// encode returns the zero page: the kernel's own setup header copied to
// 0x1f1, then the loader's fields.
func (z *zeroPage) encode() ([]byte, error) {
	if len(z.e820) > e820MaxEntries {
		return nil, fmt.Errorf("boot: %d e820 entries, the zero page holds %d", len(z.e820), e820MaxEntries)
	}
	b := make([]byte, zeroPageSize)
	copy(b[setupSectsOff:], z.hdr.raw[setupSectsOff:])
	le := binary.LittleEndian
	b[typeOfLoaderOff] = loaderUndefined
	b[loadFlagsOff] |= canUseHeap
	le.PutUint16(b[heapEndPtrOff:], heapEnd)
	le.PutUint32(b[cmdLinePtrOff:], CmdlineAddr)
	le.PutUint32(b[zpExtCmdLinePtrOff:], CmdlineAddr>>32)
	le.PutUint32(b[ramdiskImageOff:], uint32(z.initrdAddr))
	le.PutUint32(b[ramdiskSizeOff:], uint32(z.initrdSize))
	le.PutUint32(b[zpExtRamdiskImageOff:], uint32(z.initrdAddr>>32))
	le.PutUint32(b[zpExtRamdiskSizeOff:], uint32(z.initrdSize>>32))
	b[zpE820EntriesOff] = byte(len(z.e820))
	copy(b[zpE820TableOff:], encodeE820(z.e820))
	if z.rsdp != 0 && z.hdr.version >= acpiRSDPProtocol {
		le.PutUint64(b[zpACPIRSDPAddrOff:], z.rsdp)
	}
	return b, nil
}

// write writes the zero page at ZeroPageAddr.
func (z *zeroPage) write(mem *guestmem.Memory) error {
	b, err := z.encode()
	if err != nil {
		return err
	}
	if err := mem.WriteAt(b, ZeroPageAddr); err != nil {
		return fmt.Errorf("boot: writing zero page: %w", err)
	}
	return nil
}
