package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
)

// The boot GDT at GDTAddr, shared by both entry modes. Its selectors:
//
//	0x00  null
//	0x08  flat 32-bit code: CS for the PVH 32-bit entry
//	0x10  64-bit code: CS for the bzImage 64-bit entry (Linux's __BOOT_CS)
//	0x18  flat data: DS/ES/FS/GS/SS for both entries (Linux's __BOOT_DS)
//
// The GDT has no TSS descriptor (IDTAddr follows 32 bytes after GDTAddr);
// Entry.TR carries the hidden TR state the VMM loads directly.
const (
	SelectorCode32 = 0x08
	SelectorCode64 = 0x10
	SelectorData   = 0x18

	gdtEntries = 4
	gdtLimit   = gdtEntries*8 - 1
	idtLimit   = 8 - 1 // one zero (not-present) gate: every vector faults
)

// Descriptor access bytes and flag nibbles.
const (
	accessCode = 0x9b // present, DPL 0, code/data, execute/read, accessed
	accessData = 0x93 // present, DPL 0, code/data, read/write, accessed

	flagG  = 0x8 // limit in 4 KiB units
	flagDB = 0x4 // 32-bit default operand size
	flagL  = 0x2 // 64-bit code segment
)

// gdt returns the boot GDT's descriptors in selector order.
func gdt() [gdtEntries]uint64 {
	return [gdtEntries]uint64{
		0,
		descriptor(0, 0xfffff, accessCode, flagG|flagDB),
		descriptor(0, 0xfffff, accessCode, flagG|flagL),
		descriptor(0, 0xfffff, accessData, flagG|flagDB),
	}
}

// descriptor encodes an x86 segment descriptor: base, a 20-bit limit, the
// access byte and the G/DB/L/AVL flag nibble.
func descriptor(base, limit uint32, access, flags uint8) uint64 {
	return uint64(limit&0xffff) |
		uint64(base&0xffffff)<<16 |
		uint64(access)<<40 |
		uint64(limit>>16&0xf)<<48 |
		uint64(flags&0xf)<<52 |
		uint64(base>>24)<<56
}

// Segment is a decoded segment register: the visible selector and the hidden
// descriptor cache, field for field what KVM's struct kvm_segment holds.
type Segment struct {
	Base     uint64
	Limit    uint32 // byte-granular limit (0xffffffff for a flat 4 GiB segment)
	Selector uint16
	Type     uint8 // descriptor type nibble (e.g. 0xb execute/read accessed)
	Present  bool
	DPL      uint8
	DB       bool // 32-bit default size
	S        bool // code/data (true) or system (false) segment
	L        bool // 64-bit code
	G        bool // limit counted in 4 KiB pages
	AVL      bool
}

// DescriptorTable is a GDTR or IDTR value.
type DescriptorTable struct {
	Base  uint64
	Limit uint16
}

// segmentFor decodes the boot GDT's descriptor for selector sel, so that the
// registers the VMM loads always match the GDT in guest memory.
func segmentFor(sel uint16) Segment {
	return decodeDescriptor(sel, gdt()[sel>>3])
}

// decodeDescriptor turns a segment descriptor into register state.
func decodeDescriptor(sel uint16, d uint64) Segment {
	access := uint8(d >> 40)
	flags := uint8(d>>52) & 0xf
	limit := uint32(d&0xffff) | uint32(d>>48&0xf)<<16
	if flags&flagG != 0 {
		limit = limit<<12 | 0xfff
	}
	return Segment{
		Base:     d>>16&0xffffff | (d>>56)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     access & 0xf,
		S:        access&0x10 != 0,
		DPL:      access >> 5 & 3,
		Present:  access&0x80 != 0,
		AVL:      flags&0x1 != 0,
		L:        flags&flagL != 0,
		DB:       flags&flagDB != 0,
		G:        flags&flagG != 0,
	}
}

// bootTR is the task register state for both entries: a busy TSS at base 0
// with limit 0x67, as the PVH ABI specifies. It has no GDT descriptor
// (selector 0, like KVM's reset state); the kernels load their own TR.
func bootTR() Segment { return Segment{Limit: 0x67, Type: 0xb, Present: true} }

// writeGDT writes the boot GDT at GDTAddr and an IDT of one empty gate at
// IDTAddr.
func writeGDT(mem *guestmem.Memory) error {
	var b [gdtEntries * 8]byte
	for i, d := range gdt() {
		binary.LittleEndian.PutUint64(b[i*8:], d)
	}
	if err := mem.WriteAt(b[:], GDTAddr); err != nil {
		return fmt.Errorf("boot: writing GDT: %w", err)
	}
	if err := mem.Zero(IDTAddr, idtLimit+1); err != nil {
		return fmt.Errorf("boot: writing IDT: %w", err)
	}
	return nil
}
