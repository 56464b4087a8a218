package boot

import "github.com/corral-vmm/corral/guestmem"

// Mode is the CPU mode an Entry starts in.
type Mode int

// Entry modes.
const (
	Mode64 Mode = 64 // long mode, paging on (bzImage 64-bit boot protocol)
	Mode32 Mode = 32 // 32-bit protected mode, paging off (PVH)
)

// Control register and EFER bits used by the entry states.
const (
	CR0PE = 1 << 0  // protected mode
	CR0ET = 1 << 4  // extension type (hardwired 1 on modern CPUs)
	CR0NE = 1 << 5  // native x87 error reporting
	CR0PG = 1 << 31 // paging

	CR4PAE = 1 << 5 // physical address extension

	EFERLME = 1 << 8  // long mode enable
	EFERLMA = 1 << 10 // long mode active

	// RFLAGSFixed is bit 1 of RFLAGS, always set; IF (bit 9) stays clear.
	RFLAGSFixed = 1 << 1
)

// Entry is the state vCPU 0 must be in when it first runs. Registers not
// listed are zero. ES, FS, GS and SS are loaded with DS. There is no stack:
// neither boot protocol gives the kernel one.
type Entry struct {
	Kind Kind // the kernel format Load detected
	Mode Mode

	RIP, RSP, RSI, RBX, RFLAGS uint64
	CR0, CR3, CR4, EFER        uint64

	GDT, IDT   DescriptorTable
	CS, DS, TR Segment
}

// entry64 writes the identity page tables and returns the 64-bit bzImage
// entry: RIP at the kernel's startup_64 (load address + 0x200), RSI at the
// zero page, CS = __BOOT_CS, DS = __BOOT_DS, paging on, interrupts off.
func entry64(mem *guestmem.Memory) (*Entry, error) {
	if err := writePageTables(mem); err != nil {
		return nil, err
	}
	return &Entry{
		Mode:   Mode64,
		RIP:    KernelAddr + startup64Offset,
		RSI:    ZeroPageAddr,
		RFLAGS: RFLAGSFixed,
		CR0:    CR0PE | CR0ET | CR0NE | CR0PG,
		CR3:    PML4Addr,
		CR4:    CR4PAE,
		EFER:   EFERLME | EFERLMA,
		GDT:    DescriptorTable{Base: GDTAddr, Limit: gdtLimit},
		IDT:    DescriptorTable{Base: IDTAddr, Limit: idtLimit},
		CS:     segmentFor(SelectorCode64),
		DS:     segmentFor(SelectorData),
		TR:     bootTR(),
	}, nil
}

// entry32 returns the PVH entry: EIP at the note's entry point, EBX at the
// hvm_start_info, flat 32-bit segments, CR0 = PE|ET (as the PVH ABI says),
// paging off, interrupts off.
func entry32(rip uint64) *Entry {
	return &Entry{
		Mode:   Mode32,
		RIP:    rip,
		RBX:    PVHInfoAddr,
		RFLAGS: RFLAGSFixed,
		CR0:    CR0PE | CR0ET,
		GDT:    DescriptorTable{Base: GDTAddr, Limit: gdtLimit},
		IDT:    DescriptorTable{Base: IDTAddr, Limit: idtLimit},
		CS:     segmentFor(SelectorCode32),
		DS:     segmentFor(SelectorData),
		TR:     bootTR(),
	}
}
