/*
 * Shared runtime of the Corral test guests: port I/O, COM1 output, a tiny
 * printf, the PVH start_info, command-line parsing, time bounds and exit.
 * Freestanding: no libc, no SSE, no red zone; 64-bit long mode, identity map.
 */
#ifndef CORRAL_GUEST_LIB_H
#define CORRAL_GUEST_LIB_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef unsigned long usize;

#define NULL ((void *)0)

/* Exit codes shared by all guests (mirrored in exitcodes.go). */
#define EXIT_OK            0
#define EXIT_BAD_ARGS      2
#define EXIT_SMP_TIMEOUT   3
#define EXIT_SMP_EXTRA     4
#define EXIT_RTC_ABSENT    5
#define EXIT_RTC_INVALID   6
#define EXIT_SMP_NO_PAGE   7
#define EXIT_FAULT_SURVIVED 8
/* virtio driver (virtio.c), shared by blk and net */
#define EXIT_VIRTIO_NO_DEVICE   10
#define EXIT_VIRTIO_BAD_CAPS    11
#define EXIT_VIRTIO_FEATURES    12
#define EXIT_VIRTIO_QUEUE       13
#define EXIT_VIRTIO_TIMEOUT     14
#define EXIT_VIRTIO_NEEDS_RESET 15
/* blk */
#define EXIT_BLK_READ           16
#define EXIT_BLK_WRITE          17
#define EXIT_BLK_VERIFY         18
#define EXIT_BLK_FLUSH          19
#define EXIT_BLK_GET_ID         20
#define EXIT_BLK_RO_WRITE_OK    21
#define EXIT_BLK_RO_MISMATCH    22
#define EXIT_BLK_SEQREAD        23
#define EXIT_BLK_BADREQ_ANSWERED 24
/* net */
#define EXIT_NET_NO_MAC         30
#define EXIT_NET_DHCP_TIMEOUT   31
#define EXIT_NET_DHCP_NAK       32
#define EXIT_NET_ARP_TIMEOUT    33
#define EXIT_NET_UDP_TIMEOUT    34
/* count */
#define EXIT_COUNT_MEM_BAD      40
#define EXIT_BAD_START_INFO 125

/* Debug-exit port: outb(v) ends the VM with status v. */
#define DEBUG_EXIT_PORT 0xf4

/* struct hvm_start_info (xen/include/public/arch-x86/hvm/start_info.h). */
#define HVM_START_MAGIC 0x336ec578u
struct hvm_start_info {
	u32 magic;
	u32 version;
	u32 flags;
	u32 nr_modules;
	u64 modlist_paddr;
	u64 cmdline_paddr;
	u64 rsdp_paddr;
	/* version >= 1 */
	u64 memmap_paddr;
	u32 memmap_entries;
	u32 reserved;
};

struct hvm_memmap_table_entry {
	u64 addr;
	u64 size;
	u32 type;
	u32 reserved;
};

/* Highest physical address the guest maps write-back (page tables in entry.S). */
#define IDENTITY_LIMIT (1ul << 30)

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* Full barrier without mfence (refused by some emulators). */
static inline void full_barrier(void)
{
	__asm__ volatile("lock; addl $0,(%%rsp)" ::: "memory", "cc");
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline u32 mmio_read32(u64 addr)
{
	return *(volatile u32 *)addr;
}

static inline void mmio_write32(u64 addr, u32 v)
{
	*(volatile u32 *)addr = v;
}

__attribute__((noreturn)) static inline void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" ::: "memory");
}

/* Spinlock on an int with xchg (implicitly locked). */
void spin_lock(volatile int *l);
void spin_unlock(volatile int *l);

/* Serial output. Each printf call holds the console lock for its whole
 * output, so a caller that prints whole lines never interleaves with other CPUs. */
void printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse start_info at paddr (validates magic, copies the command line).
 * Returns NULL if the structure is unusable. */
const struct hvm_start_info *start_info_init(u64 paddr);

/* The command line copied by start_info_init ("" if none). */
const char *cmdline(void);

/* Value of key=value on the command line: copies at most n-1 bytes into buf.
 * Returns 1 if the key was found, else 0 (buf = ""). */
int cmdline_get(const char *key, char *buf, usize n);

/* Unsigned number (decimal or 0x-hex) for key, or def if absent/invalid. */
u64 cmdline_uint(const char *key, u64 def);

/* Roughly how many TSC ticks make a millisecond (CPUID leaves 0x40000010,
 * 0x15, 0x16, else an assumed 3 GHz). Good enough for bounding waits. */
u64 tsc_ticks_per_ms(void);

/* Busy-wait about ms milliseconds. */
void delay_ms(u64 ms);
void delay_us(u64 us);

/* Ends the VM through the debug-exit port with code & 0xff; halts if the
 * port does nothing. */
__attribute__((noreturn)) void guest_exit(int code);

/* Implemented by each guest; its return value is the exit code. */
int guest_main(u64 start_info_paddr);

void *memcpy(void *dst, const void *src, usize n);
void *memset(void *dst, int c, usize n);
usize strlen(const char *s);

#endif
