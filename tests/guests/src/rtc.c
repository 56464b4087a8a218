/*
 * rtc: reads the CMOS real-time clock the careful way and prints
 *   rtc: status-b 0xBB (bcd|binary, 24h|12h)
 *   rtc: YYYY-MM-DD HH:MM:SS
 * then exits 0. Optional command-line keys binary=0|1 and h24=0|1 first
 * rewrite status B's data-mode and 24-hour bits (an RTC that formats on read,
 * as QEMU's and Corral's do, then answers in that format), so every decoding
 * path can be tested. With no RTC (every register reads 0xff, or update-in-progress
 * never clears) it prints "rtc: no rtc ..." and exits EXIT_RTC_ABSENT; a date
 * out of range gives "rtc: invalid ..." and EXIT_RTC_INVALID.
 *
 * Method: wait until status A bit 7 (update in progress) is clear, read all
 * registers, repeat until two consecutive reads agree; decode BCD unless
 * status B bit 2 (binary) is set; convert 12-hour mode (status B bit 1 clear,
 * hour bit 7 = PM); century from register 0x32 if it decodes to 19..99,
 * else 20.
 */
#include "lib.h"

#define CMOS_INDEX 0x70
#define CMOS_DATA  0x71

#define REG_SEC     0x00
#define REG_MIN     0x02
#define REG_HOUR    0x04
#define REG_DAY     0x07
#define REG_MONTH   0x08
#define REG_YEAR    0x09
#define REG_A       0x0a
#define REG_B       0x0b
#define REG_CENTURY 0x32

#define A_UIP     0x80
#define B_24H     0x02
#define B_BINARY  0x04
#define HOUR_PM   0x80

#define MAX_TRIES 10
#define UIP_WAIT_MS 50

struct raw_time {
	u8 sec, min, hour, day, month, year, century;
};

static u8 cmos_read(u8 reg)
{
	outb(CMOS_INDEX, reg);
	return inb(CMOS_DATA);
}

/* Waits (bounded) until no update is in progress. Returns 0 on timeout. */
static int wait_uip_clear(void)
{
	u64 limit = tsc_ticks_per_ms() * UIP_WAIT_MS;
	u64 start = rdtsc();
	do {
		if (!(cmos_read(REG_A) & A_UIP))
			return 1;
		cpu_relax();
	} while (rdtsc() - start < limit);
	return 0;
}

static void read_raw(struct raw_time *t)
{
	t->sec = cmos_read(REG_SEC);
	t->min = cmos_read(REG_MIN);
	t->hour = cmos_read(REG_HOUR);
	t->day = cmos_read(REG_DAY);
	t->month = cmos_read(REG_MONTH);
	t->year = cmos_read(REG_YEAR);
	t->century = cmos_read(REG_CENTURY);
}

static int same(const struct raw_time *a, const struct raw_time *b)
{
	return a->sec == b->sec && a->min == b->min && a->hour == b->hour && a->day == b->day &&
	       a->month == b->month && a->year == b->year && a->century == b->century;
}

/* Decodes a BCD byte; returns 0xff for digits above 9. */
static u8 from_bcd(u8 v)
{
	if ((v & 0x0f) > 9 || (v >> 4) > 9)
		return 0xff;
	return (u8)((v >> 4) * 10 + (v & 0x0f));
}

int guest_main(u64 start_info_paddr)
{
	start_info_init(start_info_paddr);

	u8 a = cmos_read(REG_A);
	u8 b = cmos_read(REG_B);
	if (a == 0xff && b == 0xff) {
		printf("rtc: no rtc (status A and B read 0xff)\n");
		return EXIT_RTC_ABSENT;
	}
	u64 want_binary = cmdline_uint("binary", 2);
	u64 want_h24 = cmdline_uint("h24", 2);
	if (want_binary <= 1 || want_h24 <= 1) {
		u8 nb = b;
		if (want_binary <= 1)
			nb = (u8)(want_binary ? (nb | B_BINARY) : (nb & ~B_BINARY));
		if (want_h24 <= 1)
			nb = (u8)(want_h24 ? (nb | B_24H) : (nb & ~B_24H));
		outb(CMOS_INDEX, REG_B);
		outb(CMOS_DATA, nb);
		b = cmos_read(REG_B);
	}
	int binary = (b & B_BINARY) != 0;
	int h24 = (b & B_24H) != 0;
	printf("rtc: status-b 0x%02x (%s, %s)\n", b, binary ? "binary" : "bcd", h24 ? "24h" : "12h");

	struct raw_time t1, t2;
	int stable = 0;
	if (!wait_uip_clear()) {
		printf("rtc: no rtc (update-in-progress never clears)\n");
		return EXIT_RTC_ABSENT;
	}
	read_raw(&t1);
	for (int i = 0; i < MAX_TRIES; i++) {
		if (!wait_uip_clear()) {
			printf("rtc: no rtc (update-in-progress never clears)\n");
			return EXIT_RTC_ABSENT;
		}
		read_raw(&t2);
		if (same(&t1, &t2)) {
			stable = 1;
			break;
		}
		t1 = t2;
	}
	if (!stable) {
		printf("rtc: invalid: time did not settle after %d reads\n", MAX_TRIES);
		return EXIT_RTC_INVALID;
	}

	int pm = (t1.hour & HOUR_PM) != 0;
	u8 hour_raw = h24 ? t1.hour : (u8)(t1.hour & ~HOUR_PM);
	u8 sec = t1.sec, min = t1.min, hour = hour_raw, day = t1.day, month = t1.month,
	   year = t1.year, century = t1.century;
	if (!binary) {
		sec = from_bcd(sec);
		min = from_bcd(min);
		hour = from_bcd(hour);
		day = from_bcd(day);
		month = from_bcd(month);
		year = from_bcd(year);
		century = from_bcd(century);
	}
	if (!h24 && (hour < 1 || hour > 12))
		hour = 0xff; /* caught by the range check below */
	else if (!h24) {
		/* 12-hour clock: 12 AM is midnight, 12 PM is noon. */
		if (hour == 12)
			hour = 0;
		if (pm)
			hour = (u8)(hour + 12);
	}
	if (century < 19 || century > 99)
		century = 20;

	if (sec > 59 || min > 59 || hour > 23 || day < 1 || day > 31 || month < 1 || month > 12 ||
	    year > 99) {
		printf("rtc: invalid: raw %02x-%02x-%02x %02x:%02x:%02x\n", t1.year, t1.month, t1.day,
		       t1.hour, t1.min, t1.sec);
		return EXIT_RTC_INVALID;
	}
	printf("rtc: %04u-%02u-%02u %02u:%02u:%02u\n", (u32)century * 100 + year, month, day, hour,
	       min, sec);
	return EXIT_OK;
}
