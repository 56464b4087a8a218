/*
 * smp: starts the application processors and counts them in.
 *
 * The BSP reads cpus=N (1..64, default 1) and timeout=MS (default 5000) from
 * the command line, copies the real-mode trampoline (smp_trampoline.S) to a
 * free RAM page below 640 KiB (0x8000 unless the memmap or the VMM's boot
 * data rule it out), and sends INIT, then SIPI twice, to all processors
 * but itself through the xAPIC ICR. Each AP prints "cpu K up" (K = its
 * LAPIC ID), increments ap_count with a locked add and halts. The BSP waits
 * (bounded by the TSC) for N-1 APs and prints
 *   smp: N cpus online                   exit 0
 *   smp: timeout, M of N online          exit EXIT_SMP_TIMEOUT
 *   smp: M cpus online, expected N       exit EXIT_SMP_EXTRA (more than asked)
 * Console lines never interleave: printf holds a spinlock per call.
 */
#include "lib.h"

#define SMP_TRAMPOLINE_PAGE 0x8000ul /* preferred page */
#define PAGE_SIZE 0x1000ul
#define LOW_MEM_END 0xa0000ul
#define MAX_CPUS 64

#define MSR_APIC_BASE       0x1b
#define APIC_BASE_X2APIC    (1ul << 10)
#define APIC_BASE_ENABLE    (1ul << 11)
#define APIC_BASE_ADDR_MASK 0xffffff000ul

#define LAPIC_ID   0x020
#define LAPIC_SVR  0x0f0
#define LAPIC_ESR  0x280
#define LAPIC_ICRL 0x300
#define LAPIC_ICRH 0x310

#define SVR_ENABLE          0x100
#define ICR_DELIVERY_STATUS (1u << 12)
#define ICR_INIT            0x00000500u
#define ICR_STARTUP         0x00000600u
#define ICR_ASSERT          0x00004000u
#define ICR_ALL_BUT_SELF    0x000c0000u

extern const u8 smp_trampoline_start[], smp_trampoline_end[];

static volatile u64 lapic_base;
static volatile int ap_count;

static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static u32 lapic_read(u32 reg)
{
	return mmio_read32(lapic_base + reg);
}

static void lapic_write(u32 reg, u32 v)
{
	mmio_write32(lapic_base + reg, v);
}

/* Sends an IPI and waits (bounded) for the ICR to report it delivered. */
static void send_ipi(u32 icr_low)
{
	lapic_write(LAPIC_ESR, 0);
	lapic_write(LAPIC_ICRH, 0);
	lapic_write(LAPIC_ICRL, icr_low);
	u64 limit = tsc_ticks_per_ms() * 10;
	u64 start = rdtsc();
	while ((lapic_read(LAPIC_ICRL) & ICR_DELIVERY_STATUS) && rdtsc() - start < limit)
		cpu_relax();
}

/* Called by each AP on its own stack (smp_trampoline.S). */
void ap_main(void)
{
	u32 id = lapic_read(LAPIC_ID) >> 24;
	printf("cpu %u up\n", id);
	__atomic_fetch_add(&ap_count, 1, __ATOMIC_SEQ_CST);
	halt_forever();
}

static u64 sat_add(u64 a, u64 b)
{
	return a + b < a ? ~0ul : a + b;
}

/* Reports whether the memmap (if any) says [page, page+4 KiB) is RAM. */
static int page_is_ram(const struct hvm_start_info *si, u64 page)
{
	u64 mm = si->memmap_paddr;
	u32 n = si->memmap_entries;
	if (mm == 0 || n == 0)
		return 1; /* no map: trust the PVH convention that low memory is RAM */
	if (mm >= IDENTITY_LIMIT || n > (IDENTITY_LIMIT - mm) / sizeof(struct hvm_memmap_table_entry))
		return 0;
	const struct hvm_memmap_table_entry *e = (const void *)mm;
	for (u32 i = 0; i < n; i++) {
		if (e[i].type == 1 && e[i].addr <= page && sat_add(e[i].addr, e[i].size) >= page + PAGE_SIZE)
			return 1;
	}
	return 0;
}

/*
 * Picks the 4 KiB page below 640 KiB that the trampoline is copied to:
 * RAM per the memmap, not holding what the VMM handed over (start_info, the
 * memmap, the command line, the module list), preferring 0x8000. Returns 0
 * if there is none.
 */
static u64 pick_trampoline_page(u64 si_paddr, const struct hvm_start_info *si)
{
	const u64 busy[4][2] = {
		{si_paddr, sat_add(si_paddr, sizeof(*si))},
		{si->memmap_paddr, sat_add(si->memmap_paddr, (u64)si->memmap_entries * 24)},
		{si->cmdline_paddr, sat_add(si->cmdline_paddr, strlen(cmdline()) + 1)},
		{si->modlist_paddr, sat_add(si->modlist_paddr, (u64)si->nr_modules * 32)},
	};
	for (int pass = 0; pass < 2; pass++) {
		u64 from = pass == 0 ? SMP_TRAMPOLINE_PAGE : PAGE_SIZE;
		u64 to = pass == 0 ? LOW_MEM_END : SMP_TRAMPOLINE_PAGE;
		for (u64 page = from; page < to; page += PAGE_SIZE) {
			int ok = page_is_ram(si, page);
			for (int i = 0; ok && i < 4; i++) {
				if (busy[i][0] != 0 && busy[i][0] < page + PAGE_SIZE && page < busy[i][1])
					ok = 0;
			}
			if (ok)
				return page;
		}
	}
	return 0;
}

int guest_main(u64 start_info_paddr)
{
	const struct hvm_start_info *si = start_info_init(start_info_paddr);
	if (!si) {
		printf("smp: bad start_info at 0x%lx\n", start_info_paddr);
		return EXIT_BAD_START_INFO;
	}
	u64 want = cmdline_uint("cpus", 1);
	u64 timeout_ms = cmdline_uint("timeout", 5000);
	if (want < 1 || want > MAX_CPUS) {
		printf("smp: cpus=%lu out of range 1..%d\n", want, MAX_CPUS);
		return EXIT_BAD_ARGS;
	}
	if (want == 1) {
		printf("smp: 1 cpus online\n");
		return EXIT_OK;
	}

	u64 apic_msr = rdmsr(MSR_APIC_BASE);
	u64 base = apic_msr & APIC_BASE_ADDR_MASK;
	if (!(apic_msr & APIC_BASE_ENABLE) || (apic_msr & APIC_BASE_X2APIC) || base < 0xc0000000ul ||
	    base >= 0x100000000ul) {
		printf("smp: unusable APIC base MSR 0x%lx (need xAPIC enabled in 3-4 GiB)\n", apic_msr);
		return EXIT_BAD_ARGS;
	}
	lapic_base = base;
	u64 page = pick_trampoline_page(start_info_paddr, si);
	if (page == 0) {
		printf("smp: no free RAM page below 640 KiB for the AP trampoline\n");
		return EXIT_SMP_NO_PAGE;
	}

	usize len = (usize)(smp_trampoline_end - smp_trampoline_start);
	memcpy((void *)page, smp_trampoline_start, len);
	full_barrier();

	/* Software-enable the local APIC (spurious vector 0xff). */
	lapic_write(LAPIC_SVR, lapic_read(LAPIC_SVR) | SVR_ENABLE | 0xff);
	printf("smp: bsp apic %u, trampoline 0x%lx, starting %lu aps\n", lapic_read(LAPIC_ID) >> 24, page,
	       want - 1);

	u32 vector = (u32)(page >> 12);
	send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_INIT);
	delay_ms(10);
	send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_STARTUP | vector);
	delay_us(200);
	send_ipi(ICR_ALL_BUT_SELF | ICR_ASSERT | ICR_STARTUP | vector);

	u64 limit = tsc_ticks_per_ms() * timeout_ms;
	u64 start = rdtsc();
	int got;
	while ((got = __atomic_load_n(&ap_count, __ATOMIC_ACQUIRE)) < (int)want - 1 &&
	       rdtsc() - start < limit)
		cpu_relax();

	got = __atomic_load_n(&ap_count, __ATOMIC_ACQUIRE);
	if (got < (int)want - 1) {
		printf("smp: timeout, %d of %lu online\n", got + 1, want);
		return EXIT_SMP_TIMEOUT;
	}
	if (got > (int)want - 1) {
		printf("smp: %d cpus online, expected %lu\n", got + 1, want);
		return EXIT_SMP_EXTRA;
	}
	printf("smp: %d cpus online\n", got + 1);
	return EXIT_OK;
}
