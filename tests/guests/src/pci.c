/*
 * PCI configuration mechanism #1 on bus 0, BARs, and MMIO mappings (see pci.h).
 */
#include "pci.h"

#define PTE_P   0x001ul
#define PTE_RW  0x002ul
#define PTE_PWT 0x008ul
#define PTE_PCD 0x010ul
#define PTE_PS  0x080ul
#define PTE_ADDR_MASK 0x000ffffffffff000ul

#define GIB (1ul << 30)
#define MMIO_EXTRA_PDS 4

extern u64 pml4[512]; /* entry.S */

#define PCI_MEM_DEFAULT 0xe0000000ul
#define PCI_MEM_LIMIT   0xfec00000ul

static u64 pci_mem_next;

static u64 extra_pd[MMIO_EXTRA_PDS][512] __attribute__((aligned(4096)));
static int extra_pd_used;

static inline void pci_select(const struct pci_fn *f, u8 off)
{
	outl(PCI_CONFIG_ADDR, 0x80000000u | ((u32)f->slot << 11) | ((u32)f->fn << 8) | (off & 0xfcu));
}

u32 pci_read32(const struct pci_fn *f, u8 off)
{
	pci_select(f, off);
	return inl(PCI_CONFIG_DATA);
}

u16 pci_read16(const struct pci_fn *f, u8 off)
{
	pci_select(f, off);
	return inw((u16)(PCI_CONFIG_DATA + (off & 2)));
}

u8 pci_read8(const struct pci_fn *f, u8 off)
{
	pci_select(f, off);
	return inb((u16)(PCI_CONFIG_DATA + (off & 3)));
}

void pci_write16(const struct pci_fn *f, u8 off, u16 v)
{
	pci_select(f, off);
	outw((u16)(PCI_CONFIG_DATA + (off & 2)), v);
}

void pci_write32(const struct pci_fn *f, u8 off, u32 v)
{
	pci_select(f, off);
	outl(PCI_CONFIG_DATA, v);
}

int pci_find(u16 vendor, u16 device, int slot, struct pci_fn *out)
{
	int first = 0, last = PCI_SLOTS - 1;
	if (slot >= 0) {
		if (slot >= PCI_SLOTS)
			return 0;
		first = last = slot;
	}
	for (int s = first; s <= last; s++) {
		struct pci_fn f = {.slot = (u8)s, .fn = 0};
		u32 id = pci_read32(&f, PCI_VENDOR_ID);
		if ((id & 0xffff) == 0xffff)
			continue;
		int fns = (pci_read8(&f, PCI_HEADER_TYPE) & 0x80) ? 8 : 1;
		for (int fn = 0; fn < fns; fn++) {
			f.fn = (u8)fn;
			if (fn > 0)
				id = pci_read32(&f, PCI_VENDOR_ID);
			if ((id & 0xffff) == vendor && (id >> 16) == device) {
				f.vendor = vendor;
				f.device = device;
				*out = f;
				return 1;
			}
		}
	}
	return 0;
}

u64 pci_bar_address(const struct pci_fn *f, int bar)
{
	if (bar < 0 || bar > 5)
		return 0;
	u32 lo = pci_read32(f, (u8)(PCI_BAR0 + 4 * bar));
	if (lo & 1)
		return 0; /* I/O BAR */
	u64 addr = lo & ~0xfu;
	if (((lo >> 1) & 3) == 2) { /* 64-bit */
		if (bar == 5)
			return 0;
		addr |= (u64)pci_read32(f, (u8)(PCI_BAR0 + 4 * (bar + 1))) << 32;
	}
	return addr;
}

u64 pci_assign_bar(const struct pci_fn *f, int bar)
{
	if (bar < 0 || bar > 5)
		return 0;
	u8 reg = (u8)(PCI_BAR0 + 4 * bar);
	u32 lo = pci_read32(f, reg);
	if (lo & 1)
		return 0;
	int is64 = ((lo >> 1) & 3) == 2;
	if (is64 && bar == 5)
		return 0;
	u16 cmd = pci_read16(f, PCI_COMMAND);
	pci_write16(f, PCI_COMMAND, cmd & (u16)~PCI_COMMAND_MEMORY);
	pci_write32(f, reg, 0xffffffffu);
	u64 mask = pci_read32(f, reg) & ~0xful;
	u32 hi = 0;
	if (is64) {
		hi = pci_read32(f, (u8)(reg + 4));
		pci_write32(f, (u8)(reg + 4), 0xffffffffu);
		mask |= (u64)pci_read32(f, (u8)(reg + 4)) << 32;
	} else {
		mask |= 0xffffffff00000000ul;
	}
	u64 size = ~mask + 1;
	if (!pci_mem_next)
		pci_mem_next = cmdline_uint("pcimem", PCI_MEM_DEFAULT);
	u64 addr = 0;
	if (mask != 0 && size != 0 && (size & (size - 1)) == 0) {
		addr = (pci_mem_next + size - 1) & ~(size - 1);
		if (addr < pci_mem_next || addr + size > PCI_MEM_LIMIT || addr + size < addr)
			addr = 0;
	}
	pci_write32(f, reg, addr ? (u32)addr : (lo & ~0xfu));
	if (is64)
		pci_write32(f, (u8)(reg + 4), addr ? 0 : hi);
	pci_write16(f, PCI_COMMAND, cmd);
	if (!addr)
		return 0;
	pci_mem_next = addr + size;
	printf("pci: 00:%02x.%u BAR %d assigned 0x%lx (size 0x%lx)\n", f->slot, f->fn, bar, addr, size);
	return addr;
}

void pci_enable_memory_master(const struct pci_fn *f)
{
	u16 cmd = pci_read16(f, PCI_COMMAND);
	u16 want = cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER;
	if (want != cmd)
		pci_write16(f, PCI_COMMAND, want);
}

static int map_gib(u64 g)
{
	u64 *pdpt = (u64 *)(pml4[0] & PTE_ADDR_MASK);
	if (pdpt[g] & PTE_P)
		return 1;
	if (extra_pd_used >= MMIO_EXTRA_PDS)
		return 0;
	u64 *pd = extra_pd[extra_pd_used++];
	for (u64 i = 0; i < 512; i++)
		pd[i] = (g * GIB + (i << 21)) | PTE_P | PTE_RW | PTE_PWT | PTE_PCD | PTE_PS;
	pdpt[g] = (u64)pd | PTE_P | PTE_RW;
	u64 cr3;
	__asm__ volatile("mov %%cr3, %0; mov %0, %%cr3" : "=r"(cr3) : : "memory");
	return 1;
}

int map_mmio(u64 addr, u64 len)
{
	if (len == 0 || addr + len < addr || addr + len > 512 * GIB)
		return 0;
	for (u64 g = addr / GIB; g <= (addr + len - 1) / GIB; g++)
		if (!map_gib(g))
			return 0;
	return 1;
}
