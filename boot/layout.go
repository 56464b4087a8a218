// Package boot loads x86-64 Linux kernels (bzImage and PVH ELF) into guest
// memory and writes everything a kernel expects to find at entry: boot
// parameters or a PVH start info, the e820 memory map, the command line, the
// initrd, identity-mapped page tables, a GDT, an MP table and ACPI tables.
package boot

// The machine's guest physical memory map. One map serves every guest;
// every other package takes its addresses from here.
//
//	0x0000_0000  RAM: real-mode IVT and BIOS data area (left zero)
//	0x0000_0500  boot GDT
//	0x0000_0520  boot IDT (empty: the kernel installs its own)
//	0x0000_6000  PVH hvm_start_info, its memory map and module list
//	0x0000_7000  Linux zero page (struct boot_params)
//	0x0000_9000  identity page tables: PML4, PDPT, then 4 page directories
//	             mapping the first 4 GiB with 2 MiB pages
//	0x0002_0000  kernel command line (up to CmdlineMax bytes)
//	0x0009_FC00  EBDA: Intel MP table (reserved in e820)
//	0x000A_0000  legacy VGA/ROM hole, reserved in e820 (backed by RAM)
//	0x000E_0000  ACPI tables: RSDP first (found by a BIOS-area scan), then the rest
//	0x0010_0000  kernel load address (1 MiB); the initrd goes at the top of low RAM
//	0xC000_0000  MMIO hole up to 4 GiB: 32-bit PCI BARs and other MMIO devices
//	             from MMIOBase, then IOAPIC at IOAPICAddr, LAPIC at LAPICAddr
//	0x1_0000_0000  RAM above 4 GiB, when guest RAM exceeds the low part
const (
	GDTAddr        = 0x500
	IDTAddr        = 0x520
	PVHInfoAddr    = 0x6000
	ZeroPageAddr   = 0x7000
	PML4Addr       = 0x9000
	PDPTAddr       = 0xa000
	PDAddr         = 0xb000 // 4 consecutive page directories
	CmdlineAddr    = 0x20000
	CmdlineMax     = 0x10000 // bytes, including the terminating NUL
	EBDAAddr       = 0x9fc00
	MPTableAddr    = EBDAAddr
	LegacyHoleAddr = 0xa0000
	ACPIAddr       = 0xe0000
	ACPIEnd        = 0x100000
	KernelAddr     = 0x100000 // HIGH_MEMORY: where protected-mode kernels load

	MMIOBase     = 0xc000_0000 // start of the 32-bit MMIO hole
	MMIOSize     = 0xfec0_0000 - MMIOBase
	IOAPICAddr   = 0xfec0_0000
	LAPICAddr    = 0xfee0_0000
	HighRAMStart = 0x1_0000_0000 // RAM past the low part continues here

	// MinRAM is the least guest RAM the layout above can hold: the fixed
	// low areas, the kernel and some room for it to grow.
	MinRAM = 16 << 20
)

// RAMRange is one range of guest RAM in the machine's memory map.
type RAMRange struct {
	GPA  uint64
	Size uint64
}

// RAMRanges splits size bytes of guest RAM around the MMIO hole: up to
// MMIOBase bytes at 0, the rest from HighRAMStart.
func RAMRanges(size uint64) []RAMRange {
	if size <= MMIOBase {
		return []RAMRange{{GPA: 0, Size: size}}
	}
	return []RAMRange{{GPA: 0, Size: MMIOBase}, {GPA: HighRAMStart, Size: size - MMIOBase}}
}
