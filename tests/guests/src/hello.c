/*
 * hello: prints its greeting, the command line and what start_info says,
 * then exits with exit=N from the command line (default 0).
 *
 * Output:
 *   corral-guest: ready                 (from entry.S, 32-bit code)
 *   corral-guest: hello
 *   cmdline: <command line>
 *   start_info: version V, flags 0xF, modules M, rsdp 0xR, memmap E entries
 *   memmap: base=0x... size=0x... type=T   (one per entry, at most 32)
 *   corral-guest: exit N
 */
#include "lib.h"

#define MAX_MEMMAP_PRINT 32

int guest_main(u64 start_info_paddr)
{
	const struct hvm_start_info *si = start_info_init(start_info_paddr);
	printf("corral-guest: hello\n");
	if (!si) {
		printf("corral-guest: bad start_info at 0x%lx\n", start_info_paddr);
		return EXIT_BAD_START_INFO;
	}
	printf("cmdline: %s\n", cmdline());
	printf("start_info: version %u, flags 0x%x, modules %u, rsdp 0x%lx, memmap %u entries\n",
	       si->version, si->flags, si->nr_modules, si->rsdp_paddr, si->memmap_entries);
	u64 mm = si->memmap_paddr;
	u32 n = si->memmap_entries;
	if (n > MAX_MEMMAP_PRINT)
		n = MAX_MEMMAP_PRINT;
	if (mm != 0 && mm < IDENTITY_LIMIT &&
	    n <= (IDENTITY_LIMIT - mm) / sizeof(struct hvm_memmap_table_entry)) {
		const struct hvm_memmap_table_entry *e = (const void *)mm;
		for (u32 i = 0; i < n; i++)
			printf("memmap: base=0x%lx size=0x%lx type=%u\n", e[i].addr, e[i].size, e[i].type);
	}
	u64 code = cmdline_uint("exit", 0);
	printf("corral-guest: exit %u\n", (u32)(code & 0xff));
	return (int)(code & 0xff);
}
