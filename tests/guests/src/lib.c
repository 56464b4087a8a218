/*
 * Shared runtime of the Corral test guests (see lib.h).
 */
#include "lib.h"

#define COM1_THR 0x3f8
#define COM1_LSR 0x3fd
#define LSR_THRE 0x20

#define CMDLINE_MAX 1024

static volatile int console_lock;
static char cmdline_buf[CMDLINE_MAX];
static struct hvm_start_info start_info_copy;
static u64 tsc_per_ms_cached;

void *memcpy(void *dst, const void *src, usize n)
{
	u8 *d = dst;
	const u8 *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, usize n)
{
	u8 *d = dst;
	while (n--)
		*d++ = (u8)c;
	return dst;
}

usize strlen(const char *s)
{
	usize n = 0;
	while (s[n])
		n++;
	return n;
}

void spin_lock(volatile int *l)
{
	while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) {
		while (__atomic_load_n(l, __ATOMIC_RELAXED))
			cpu_relax();
	}
}

void spin_unlock(volatile int *l)
{
	__atomic_store_n(l, 0, __ATOMIC_RELEASE);
}

static void serial_putc(char c)
{
	/* Bounded: an absent UART reads as 0xff, which has THRE set. */
	for (int i = 0; i < 100000; i++) {
		if (inb(COM1_LSR) & LSR_THRE)
			break;
		cpu_relax();
	}
	outb(COM1_THR, (u8)c);
}

static void put_str(const char *s, int width, int left)
{
	int len = (int)strlen(s);
	if (!left)
		for (int i = len; i < width; i++)
			serial_putc(' ');
	while (*s)
		serial_putc(*s++);
	if (left)
		for (int i = len; i < width; i++)
			serial_putc(' ');
}

static void put_uint(u64 v, unsigned base, int width, char pad)
{
	char buf[24];
	int n = 0;
	do {
		unsigned d = (unsigned)(v % base);
		buf[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v && n < (int)sizeof(buf));
	for (int i = n; i < width; i++)
		serial_putc(pad);
	while (n)
		serial_putc(buf[--n]);
}

void printf(const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	spin_lock(&console_lock);
	for (const char *p = fmt; *p; p++) {
		if (*p != '%') {
			serial_putc(*p);
			continue;
		}
		p++;
		int left = 0, width = 0, lng = 0;
		char pad = ' ';
		if (*p == '-') {
			left = 1;
			p++;
		}
		if (*p == '0') {
			pad = '0';
			p++;
		}
		while (*p >= '0' && *p <= '9')
			width = width * 10 + (*p++ - '0');
		while (*p == 'l') {
			lng = 1;
			p++;
		}
		switch (*p) {
		case 'd':
		case 'i': {
			i64 v = lng ? __builtin_va_arg(ap, i64) : __builtin_va_arg(ap, int);
			if (v < 0) {
				serial_putc('-');
				put_uint((u64)(-(v + 1)) + 1, 10, width > 0 ? width - 1 : 0, pad);
			} else {
				put_uint((u64)v, 10, width, pad);
			}
			break;
		}
		case 'u':
			put_uint(lng ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, u32), 10, width, pad);
			break;
		case 'x':
			put_uint(lng ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, u32), 16, width, pad);
			break;
		case 'c':
			serial_putc((char)__builtin_va_arg(ap, int));
			break;
		case 's': {
			const char *s = __builtin_va_arg(ap, const char *);
			put_str(s ? s : "(null)", width, left);
			break;
		}
		case '%':
			serial_putc('%');
			break;
		case '\0':
			p--;
			break;
		default:
			serial_putc('%');
			serial_putc(*p);
			break;
		}
	}
	spin_unlock(&console_lock);
	__builtin_va_end(ap);
}

const struct hvm_start_info *start_info_init(u64 paddr)
{
	cmdline_buf[0] = '\0';
	if (paddr == 0 || paddr >= IDENTITY_LIMIT - sizeof(struct hvm_start_info))
		return NULL;
	const struct hvm_start_info *si = (const struct hvm_start_info *)paddr;
	if (si->magic != HVM_START_MAGIC)
		return NULL;
	start_info_copy = *si;
	if (start_info_copy.version < 1) {
		start_info_copy.memmap_paddr = 0;
		start_info_copy.memmap_entries = 0;
	}
	u64 c = start_info_copy.cmdline_paddr;
	if (c != 0 && c < IDENTITY_LIMIT) {
		const char *src = (const char *)c;
		usize i = 0;
		while (i < CMDLINE_MAX - 1 && c + i < IDENTITY_LIMIT && src[i]) {
			cmdline_buf[i] = src[i];
			i++;
		}
		cmdline_buf[i] = '\0';
	}
	return &start_info_copy;
}

const char *cmdline(void)
{
	return cmdline_buf;
}

int cmdline_get(const char *key, char *buf, usize n)
{
	usize klen = strlen(key);
	const char *p = cmdline_buf;
	if (n > 0)
		buf[0] = '\0';
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		const char *tok = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		usize tlen = (usize)(p - tok);
		if (tlen > klen && tok[klen] == '=') {
			int match = 1;
			for (usize i = 0; i < klen; i++) {
				if (tok[i] != key[i]) {
					match = 0;
					break;
				}
			}
			if (match) {
				usize vlen = tlen - klen - 1;
				if (n == 0)
					return 1;
				if (vlen > n - 1)
					vlen = n - 1;
				memcpy(buf, tok + klen + 1, vlen);
				buf[vlen] = '\0';
				return 1;
			}
		}
	}
	return 0;
}

u64 cmdline_uint(const char *key, u64 def)
{
	char buf[32];
	if (!cmdline_get(key, buf, sizeof(buf)) || buf[0] == '\0')
		return def;
	u64 v = 0;
	const char *p = buf;
	unsigned base = 10;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
		base = 16;
		p += 2;
		if (*p == '\0')
			return def;
	}
	for (; *p; p++) {
		unsigned d;
		if (*p >= '0' && *p <= '9')
			d = (unsigned)(*p - '0');
		else if (base == 16 && *p >= 'a' && *p <= 'f')
			d = (unsigned)(*p - 'a' + 10);
		else if (base == 16 && *p >= 'A' && *p <= 'F')
			d = (unsigned)(*p - 'A' + 10);
		else
			return def;
		if (v > (~0ul - d) / base)
			return def; /* overflow */
		v = v * base + d;
	}
	return v;
}

u64 tsc_ticks_per_ms(void)
{
	if (tsc_per_ms_cached)
		return tsc_per_ms_cached;
	u32 a, b, c, d;
	u64 per_ms = 0;
	cpuid(0, 0, &a, &b, &c, &d);
	u32 max_basic = a;
	cpuid(1, 0, &a, &b, &c, &d);
	if (c & (1u << 31)) { /* hypervisor present */
		cpuid(0x40000000, 0, &a, &b, &c, &d);
		if (a >= 0x40000010 && a < 0x40010000) {
			cpuid(0x40000010, 0, &a, &b, &c, &d);
			if (a)
				per_ms = a; /* TSC kHz */
		}
	}
	if (!per_ms && max_basic >= 0x15) {
		cpuid(0x15, 0, &a, &b, &c, &d);
		if (a && b && c)
			per_ms = (u64)c * b / a / 1000;
	}
	if (!per_ms && max_basic >= 0x16) {
		cpuid(0x16, 0, &a, &b, &c, &d);
		if (a & 0xffff)
			per_ms = (u64)(a & 0xffff) * 1000;
	}
	if (!per_ms)
		per_ms = 3000000; /* assume 3 GHz */
	tsc_per_ms_cached = per_ms;
	return per_ms;
}

void delay_us(u64 us)
{
	u64 ticks = tsc_ticks_per_ms() * us / 1000;
	u64 start = rdtsc();
	while (rdtsc() - start < ticks)
		cpu_relax();
}

void delay_ms(u64 ms)
{
	delay_us(ms * 1000);
}

void guest_exit(int code)
{
	outb(DEBUG_EXIT_PORT, (u8)code);
	halt_forever();
}
