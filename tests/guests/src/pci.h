/*
 * PCI configuration access for the test guests: configuration mechanism #1
 * (ports 0xCF8/0xCFC), bus 0 only, BAR decoding and a capability walk.
 * Each access costs two port-I/O exits, so callers read only what they need.
 */
#ifndef CORRAL_GUEST_PCI_H
#define CORRAL_GUEST_PCI_H

#include "lib.h"

#define PCI_CONFIG_ADDR 0xcf8
#define PCI_CONFIG_DATA 0xcfc

#define PCI_VENDOR_ID     0x00
#define PCI_DEVICE_ID     0x02
#define PCI_COMMAND       0x04
#define PCI_STATUS        0x06
#define PCI_HEADER_TYPE   0x0e
#define PCI_BAR0          0x10
#define PCI_CAP_PTR       0x34

#define PCI_COMMAND_MEMORY 0x0002
#define PCI_COMMAND_MASTER 0x0004
#define PCI_STATUS_CAP_LIST 0x0010

#define PCI_SLOTS 32

/* One function on bus 0. */
struct pci_fn {
	u8 slot;
	u8 fn;
	u16 vendor;
	u16 device;
};

static inline void outw(u16 port, u16 v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}

static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

u32 pci_read32(const struct pci_fn *f, u8 off);
u16 pci_read16(const struct pci_fn *f, u8 off);
u8 pci_read8(const struct pci_fn *f, u8 off);
void pci_write16(const struct pci_fn *f, u8 off, u16 v);
void pci_write32(const struct pci_fn *f, u8 off, u32 v);

/* Finds function 0 (or any function of a multi-function device) on bus 0
 * with vendor and device; slot >= 0 restricts the search to that slot.
 * Returns 1 and fills *out if found. */
int pci_find(u16 vendor, u16 device, int slot, struct pci_fn *out);

/* Memory BAR bar's address (64-bit BARs combine two registers); 0 for an
 * I/O BAR, an unassigned BAR, or bar > 5 (or 5 when 64-bit). */
u64 pci_bar_address(const struct pci_fn *f, int bar);

/* Places an unassigned memory BAR (firmware such as qboot leaves them at 0)
 * in the window from pcimem=ADDR on the command line (default 0xe0000000) up
 * to 0xfec00000, aligned to its size, and prints "pci: 00:SS.F BAR B
 * assigned 0xADDR (size 0xS)". Returns the address, or 0 if bar is not a
 * memory BAR or the window is full. Memory decode is off while sizing. */
u64 pci_assign_bar(const struct pci_fn *f, int bar);

/* Sets the memory-space and bus-master bits of the command register. */
void pci_enable_memory_master(const struct pci_fn *f);

/* Makes [addr, addr+len) addressable (uncached) if the static page tables do
 * not already map it: entry.S maps 0-1 GiB and 3-4 GiB; other gigabytes
 * below 512 GiB get one page directory of uncached 2 MiB pages each (up to
 * 4). Returns 1 on success. */
int map_mmio(u64 addr, u64 len);

#endif
