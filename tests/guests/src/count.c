/*
 * count: increments a 64-bit counter in RAM for ever, or up to limit=N,
 * and checks a 1 MiB RAM buffer as it goes: the guest a snapshot test
 * pauses, saves, restores and resumes, to see the count go on from where
 * it was and memory come back intact.
 *
 * Command line: step=S (default 2^24, a few lines a second under QEMU's
 * TCG) prints a line every S increments; limit=N (default 0: never) stops
 * at N; seed=X (default 1) seeds the buffer's pattern; corrupt=K flips a
 * bit of the buffer at count K (a print point), so a test can see the
 * check catch it.
 *
 * Output:
 *   count: step S limit N buf 0xADDR checksum 0xC
 *   count K mem ok        (every S increments and at N; "mem BAD 0xC"
 *                          when the buffer's checksum changed)
 *   count: done N         then exit 0, or ExitCountMemBad if any check failed
 */
#include "lib.h"

#define BUF_WORDS ((1u << 20) / 8)

/* In .bss: the loader zeroes it, count fills it. */
static u64 buf[BUF_WORDS] __attribute__((aligned(4096)));
/* volatile: the count lives in RAM, where a snapshot must capture it. */
static volatile u64 counter;

/* xorshift64: a pattern no zero-page or wrong-file mapping reproduces. */
static u64 next_pattern(u64 x)
{
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return x;
}

/* FNV-1a over 64-bit words: sensitive to every bit and to word order. */
static u64 checksum(void)
{
	u64 h = 0xcbf29ce484222325ul;
	for (u32 i = 0; i < BUF_WORDS; i++)
		h = (h ^ buf[i]) * 0x100000001b3ul;
	return h;
}

int guest_main(u64 start_info_paddr)
{
	start_info_init(start_info_paddr);
	u64 step = cmdline_uint("step", 1ul << 24);
	u64 limit = cmdline_uint("limit", 0);
	u64 x = cmdline_uint("seed", 1);
	u64 corrupt = cmdline_uint("corrupt", 0);
	if (step == 0)
		step = 1;
	if (x == 0)
		x = 1; /* xorshift's one fixed point */
	for (u32 i = 0; i < BUF_WORDS; i++) {
		x = next_pattern(x);
		buf[i] = x;
	}
	const u64 want = checksum();
	printf("count: step %lu limit %lu buf 0x%lx checksum 0x%lx\n", step, limit, (u64)buf, want);

	int bad = 0;
	u64 next = step;
	counter = 0;
	for (;;) {
		u64 c = counter + 1;
		counter = c;
		if (c != next && c != limit)
			continue;
		if (c == corrupt)
			buf[BUF_WORDS / 3] ^= 1ul << 29;
		u64 h = checksum();
		if (h == want) {
			printf("count %lu mem ok\n", c);
		} else {
			bad = 1;
			printf("count %lu mem BAD 0x%lx\n", c, h);
		}
		if (c == limit)
			break;
		next = c + step;
	}
	printf("count: done %lu\n", limit);
	return bad ? EXIT_COUNT_MEM_BAD : EXIT_OK;
}
