/*
 * blk: drives the first virtio-blk PCI function (or the one at slot=N) with
 * the polled virtio driver in virtio.c.
 *
 * Command line (all optional):
 *   slot=N       use the function at bus 0 slot N
 *   expect=ro|rw fail (EXIT_BLK_RO_MISMATCH) unless the device does (not)
 *                offer VIRTIO_BLK_F_RO
 *   read=S       read sector S, print its first 16 bytes in hex and up to 64
 *                bytes as text
 *   write=W      write sector W: "corral-blk-write W", a NUL, then byte i is
 *                i & 0xff; on a writable disk read it back and compare
 *   readpast=1   read the sector at the capacity: the device must refuse
 *   badreq=1     last, send a request with no status byte (a protocol
 *                error): the device must set DEVICE_NEEDS_RESET; then reset,
 *                renegotiate and read sector read=S (or 0) again
 *   seqread=N    read N MiB from sector seqstart=S (default 0) in requests
 *                of reqkb=K KiB (default 128), depth=D in flight (default 4);
 *                seqcheck=1 checks that each request's first and last
 *                sectors start with their sector number (le64)
 *   tsckhz=K     TSC frequency for the seqread figure (default: KVM's
 *                kvmclock, else CPUID leaves, else an assumed 3 GHz)
 *   qsize=N      queue entries (default 16); timeout=MS per request (10000)
 *
 * Output (after the virtio: lines):
 *   blk: capacity C sectors (ro|rw), flush (yes|no)
 *   blk: sector S hex: xx xx ... (16 bytes)
 *   blk: sector S: <text>
 *   blk: write status N        (0 = OK, 1 = IOERR, 2 = UNSUPP)
 *   blk: sector W verified
 *   blk: read past end status N
 *   blk: flush status N        (or "blk: flush not offered")
 *   blk: serial <id>
 *   blk: seqread ... MiB/s ...
 *   blk: malformed request: device needs reset
 *   blk: recovered after reset
 *   blk: ok
 * A write refused on a read-only disk is not a failure: the guest reports
 * its status and goes on. Exit codes: EXIT_VIRTIO_* and EXIT_BLK_* (lib.h).
 */
#include "virtio.h"

#define BLK_F_RO    (1ul << 5)
#define BLK_F_FLUSH (1ul << 9)

#define BLK_T_IN     0
#define BLK_T_OUT    1
#define BLK_T_FLUSH  4
#define BLK_T_GET_ID 8

#define BLK_S_OK     0
#define BLK_S_IOERR  1
#define BLK_S_UNSUPP 2

#define BLK_CFG_CAPACITY 0

#define SECTOR 512
#define ID_BYTES 20
#define DESCS_PER_REQ 3
#define MAX_SLOTS (VQ_MAX_SIZE / DESCS_PER_REQ)
#define SEQ_POOL (512u * 1024)
#define TEXT_MAX 64
#define NO_VALUE (~0ul)

struct blk_hdr {
	u32 type;
	u32 reserved;
	u64 sector;
};

static struct blk_hdr hdrs[MAX_SLOTS];
static volatile u8 statuses[MAX_SLOTS];
static u8 sector_buf[SECTOR] __attribute__((aligned(SECTOR)));
static u8 pattern_buf[SECTOR] __attribute__((aligned(SECTOR)));
static u8 id_buf[ID_BYTES];
static u8 seq_pool[SEQ_POOL] __attribute__((aligned(4096)));

static struct virtio_pci dev;
static struct virtq vq;
static u64 timeout_ms;
static int max_slots;

/* Queues one request on slot (descriptors 3*slot..3*slot+2). */
static void blk_submit(int slot, u32 type, u64 sector, void *data, u32 len, int device_writes)
{
	hdrs[slot].type = type;
	hdrs[slot].reserved = 0;
	hdrs[slot].sector = sector;
	statuses[slot] = 0xff;
	struct vq_buf b[3];
	int n = 0;
	b[n++] = (struct vq_buf){.addr = &hdrs[slot], .len = sizeof(struct blk_hdr)};
	if (len)
		b[n++] = (struct vq_buf){.addr = data, .len = len, .device_writes = device_writes};
	b[n++] = (struct vq_buf){.addr = (const void *)&statuses[slot], .len = 1, .device_writes = 1};
	virtq_add(&vq, (u16)(slot * DESCS_PER_REQ), b, n);
}

/* Waits for one completion and returns its slot, or -1 with *rc set. */
static int blk_complete(int *rc)
{
	u32 id, len;
	*rc = virtq_wait(&dev, &vq, timeout_ms, &id, &len);
	if (*rc)
		return -1;
	if (id % DESCS_PER_REQ || id / DESCS_PER_REQ >= (u32)max_slots) {
		printf("blk: device used descriptor %u, not the head of a request\n", id);
		*rc = EXIT_VIRTIO_QUEUE;
		return -1;
	}
	return (int)(id / DESCS_PER_REQ);
}

/* One synchronous request; 0 and *status, or an exit code. */
static int blk_sync(u32 type, u64 sector, void *data, u32 len, int device_writes, u8 *status)
{
	*status = 0xff;
	blk_submit(0, type, sector, data, len, device_writes);
	virtq_kick(&vq);
	int rc;
	int slot = blk_complete(&rc);
	if (slot < 0)
		return rc;
	if (slot != 0) {
		printf("blk: completion for idle slot %d\n", slot);
		return EXIT_VIRTIO_QUEUE;
	}
	*status = statuses[0];
	return 0;
}

static char printable(u8 c)
{
	return c >= 0x20 && c < 0x7f ? (char)c : '.';
}

/* Writes v in decimal at p, returns the length. */
static int put_dec(char *p, u64 v)
{
	char tmp[24];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (int i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

/* The pattern write=W leaves in sector W (the host test builds the same). */
static void fill_pattern(u8 *b, u64 w)
{
	for (int i = 0; i < SECTOR; i++)
		b[i] = (u8)i;
	static const char prefix[] = "corral-blk-write ";
	int n = 0;
	for (; prefix[n]; n++)
		b[n] = (u8)prefix[n];
	n += put_dec((char *)b + n, w);
	b[n] = 0;
}

static int do_read(u64 s)
{
	u8 st;
	int rc = blk_sync(BLK_T_IN, s, sector_buf, SECTOR, 1, &st);
	if (rc)
		return rc;
	if (st != BLK_S_OK) {
		printf("blk: read sector %lu status %u\n", s, st);
		return EXIT_BLK_READ;
	}
	char hex[16 * 3 + 1];
	for (int i = 0; i < 16; i++) {
		static const char digits[] = "0123456789abcdef";
		hex[3 * i] = digits[sector_buf[i] >> 4];
		hex[3 * i + 1] = digits[sector_buf[i] & 15];
		hex[3 * i + 2] = i < 15 ? ' ' : '\0';
	}
	printf("blk: sector %lu hex: %s\n", s, hex);
	char text[TEXT_MAX + 1];
	int n = 0;
	for (; n < TEXT_MAX && sector_buf[n]; n++)
		text[n] = printable(sector_buf[n]);
	text[n] = '\0';
	printf("blk: sector %lu: %s\n", s, text);
	return 0;
}

static int do_write(u64 w, int ro)
{
	fill_pattern(pattern_buf, w);
	u8 st;
	int rc = blk_sync(BLK_T_OUT, w, pattern_buf, SECTOR, 0, &st);
	if (rc)
		return rc;
	printf("blk: write status %u\n", st);
	if (ro) {
		if (st == BLK_S_OK) {
			printf("blk: write to a read-only disk succeeded\n");
			return EXIT_BLK_RO_WRITE_OK;
		}
		return 0;
	}
	if (st != BLK_S_OK)
		return EXIT_BLK_WRITE;
	rc = blk_sync(BLK_T_IN, w, sector_buf, SECTOR, 1, &st);
	if (rc)
		return rc;
	if (st != BLK_S_OK) {
		printf("blk: reading back sector %lu status %u\n", w, st);
		return EXIT_BLK_READ;
	}
	for (int i = 0; i < SECTOR; i++) {
		if (sector_buf[i] != pattern_buf[i]) {
			printf("blk: sector %lu byte %d reads back 0x%x, wrote 0x%x\n", w, i, sector_buf[i],
			       pattern_buf[i]);
			return EXIT_BLK_VERIFY;
		}
	}
	printf("blk: sector %lu verified\n", w);
	return 0;
}

static int do_get_id(void)
{
	u8 st;
	int rc = blk_sync(BLK_T_GET_ID, 0, id_buf, ID_BYTES, 1, &st);
	if (rc)
		return rc;
	if (st != BLK_S_OK) {
		printf("blk: GET_ID status %u\n", st);
		return EXIT_BLK_GET_ID;
	}
	char id[ID_BYTES + 1];
	int n = 0;
	for (; n < ID_BYTES && id_buf[n]; n++)
		id[n] = printable(id_buf[n]);
	id[n] = '\0';
	printf("blk: serial %s\n", id);
	return 0;
}

static u64 le64(const u8 *p)
{
	u64 v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static int check_request(const u8 *buf, u64 first, u64 sectors)
{
	u64 got = le64(buf), last = first + sectors - 1;
	u64 got_last = le64(buf + (sectors - 1) * SECTOR);
	if (got != first || got_last != last) {
		printf("blk: seqcheck: sectors %lu and %lu start with %lu and %lu\n", first, last, got, got_last);
		return EXIT_BLK_SEQREAD;
	}
	return 0;
}

static int do_seqread(u64 mib, u64 capacity)
{
	u64 reqkb = cmdline_uint("reqkb", 128);
	u64 depth = cmdline_uint("depth", 4);
	u64 start = cmdline_uint("seqstart", 0);
	int check = cmdline_uint("seqcheck", 0) != 0;
	u64 tsc_khz = cmdline_uint("tsckhz", 0);
	if (mib == 0 || reqkb == 0 || depth == 0 || depth > (u64)max_slots || reqkb * 1024 * depth > SEQ_POOL ||
	    (mib * 1024) % reqkb) {
		printf("blk: seqread=%lu reqkb=%lu depth=%lu: want N > 0, N MiB a multiple of reqkb, depth 1..%d, "
		       "reqkb*depth <= %u KiB\n", mib, reqkb, depth, max_slots, SEQ_POOL / 1024);
		return EXIT_BAD_ARGS;
	}
	u64 req_sectors = reqkb * 1024 / SECTOR;
	u64 nreq = mib * 1024 / reqkb;
	if (start > capacity || nreq * req_sectors > capacity - start) {
		printf("blk: seqread of %lu MiB from sector %lu passes the capacity (%lu sectors)\n", mib, start,
		       capacity);
		return EXIT_BAD_ARGS;
	}
	u64 slot_sector[MAX_SLOTS];
	u64 issued = 0, done = 0;
	u32 kicks0 = vq.kicks;
	u64 t0 = rdtsc();
	for (int s = 0; s < (int)depth && issued < nreq; s++, issued++) {
		slot_sector[s] = start + issued * req_sectors;
		blk_submit(s, BLK_T_IN, slot_sector[s], seq_pool + (u64)s * reqkb * 1024, (u32)(reqkb * 1024), 1);
	}
	virtq_kick(&vq);
	while (done < nreq) {
		int rc;
		int s = blk_complete(&rc);
		if (s < 0)
			return rc;
		int resubmitted = 0;
		for (;;) {
			if (statuses[s] != BLK_S_OK) {
				printf("blk: seqread sector %lu status %u\n", slot_sector[s], statuses[s]);
				return EXIT_BLK_SEQREAD;
			}
			if (check && (rc = check_request(seq_pool + (u64)s * reqkb * 1024, slot_sector[s], req_sectors)))
				return rc;
			done++;
			if (issued < nreq) {
				slot_sector[s] = start + issued * req_sectors;
				blk_submit(s, BLK_T_IN, slot_sector[s], seq_pool + (u64)s * reqkb * 1024,
					   (u32)(reqkb * 1024), 1);
				issued++;
				resubmitted = 1;
			}
			u32 id, len;
			if (!virtq_poll(&vq, &id, &len))
				break;
			if (id % DESCS_PER_REQ || id / DESCS_PER_REQ >= depth) {
				printf("blk: device used descriptor %u, not the head of a request\n", id);
				return EXIT_VIRTIO_QUEUE;
			}
			s = (int)(id / DESCS_PER_REQ);
		}
		if (resubmitted)
			virtq_kick(&vq);
	}
	u64 ticks = rdtsc() - t0;
	const char *src = "cmdline";
	u64 per_ms = tsc_khz ? tsc_khz : virtio_tsc_khz(&src);
	u64 us = ticks * 1000 / per_ms;
	if (us == 0)
		us = 1;
	u64 centi = mib * 100 * 1000000 / us; /* MiB/s x 100 */
	printf("blk: seqread %lu MiB, %lu requests of %lu KiB, depth %lu: %lu ticks, %lu us, %lu.%02lu MiB/s, "
	       "%u kicks (tsc %lu kHz, %s)\n", mib, nreq, reqkb, depth, ticks, us, centi / 100, centi % 100,
	       vq.kicks - kicks0, per_ms, src);
	return 0;
}

/* Sets the device up from reset: features, queue 0, DRIVER_OK. */
static int blk_setup(void)
{
	int rc;
	if ((rc = virtio_negotiate(&dev, BLK_F_FLUSH)))
		return rc;
	if ((rc = virtio_queue_setup(&dev, &vq, 0, (u16)cmdline_uint("qsize", 16))))
		return rc;
	max_slots = vq.size / DESCS_PER_REQ;
	return virtio_driver_ok(&dev);
}

/* badreq=1: a chain of just the header, nothing for the status. The device
 * cannot answer it and must ask for a reset; after one it works again. */
static int do_badreq(u64 s)
{
	struct vq_buf b = {.addr = &hdrs[0], .len = sizeof(struct blk_hdr)};
	hdrs[0].type = BLK_T_IN;
	hdrs[0].reserved = 0;
	hdrs[0].sector = 0;
	virtq_add(&vq, 0, &b, 1);
	virtq_kick(&vq);
	u32 id, len;
	int rc = virtq_wait(&dev, &vq, timeout_ms, &id, &len);
	if (rc == 0) {
		printf("blk: device answered a request without a status byte (id %u, len %u)\n", id, len);
		return EXIT_BLK_BADREQ_ANSWERED;
	}
	if (rc != EXIT_VIRTIO_NEEDS_RESET)
		return rc;
	printf("blk: malformed request: device needs reset\n");
	if ((rc = blk_setup()))
		return rc;
	if ((rc = do_read(s)))
		return rc;
	printf("blk: recovered after reset\n");
	return 0;
}

int guest_main(u64 start_info_paddr)
{
	if (!start_info_init(start_info_paddr)) {
		printf("blk: bad start_info at 0x%lx\n", start_info_paddr);
		return EXIT_BAD_START_INFO;
	}
	timeout_ms = cmdline_uint("timeout", 10000);
	u64 slot = cmdline_uint("slot", NO_VALUE);
	int rc = virtio_open(&dev, VIRTIO_DEV_BLK, slot == NO_VALUE ? -1 : (int)(slot & 0x7fffffff));
	if (rc)
		return rc;
	if ((rc = blk_setup()))
		return rc;

	int ro = (dev.offered & BLK_F_RO) != 0;
	int flush = (dev.accepted & BLK_F_FLUSH) != 0;
	u64 capacity = virtio_cfg64(&dev, BLK_CFG_CAPACITY);
	printf("blk: capacity %lu sectors (%s), flush %s, queue size %u\n", capacity, ro ? "ro" : "rw",
	       flush ? "yes" : "no", vq.size);
	char expect[8];
	if (cmdline_get("expect", expect, sizeof(expect))) {
		int want_ro = expect[0] == 'r' && expect[1] == 'o' && expect[2] == 0;
		if (want_ro != ro) {
			printf("blk: expected a %s disk\n", expect);
			return EXIT_BLK_RO_MISMATCH;
		}
	}

	u64 s = cmdline_uint("read", NO_VALUE);
	if (s != NO_VALUE) {
		if (s >= capacity) {
			printf("blk: read=%lu is past the capacity\n", s);
			return EXIT_BAD_ARGS;
		}
		if ((rc = do_read(s)))
			return rc;
	}
	u64 w = cmdline_uint("write", NO_VALUE);
	if (w != NO_VALUE) {
		if (w >= capacity) {
			printf("blk: write=%lu is past the capacity\n", w);
			return EXIT_BAD_ARGS;
		}
		if ((rc = do_write(w, ro)))
			return rc;
	}
	if (cmdline_uint("readpast", 0)) {
		u8 st;
		if ((rc = blk_sync(BLK_T_IN, capacity, sector_buf, SECTOR, 1, &st)))
			return rc;
		printf("blk: read past end status %u\n", st);
		if (st == BLK_S_OK)
			return EXIT_BLK_READ;
	}
	if (flush) {
		u8 st;
		if ((rc = blk_sync(BLK_T_FLUSH, 0, NULL, 0, 0, &st)))
			return rc;
		printf("blk: flush status %u\n", st);
		if (st != BLK_S_OK)
			return EXIT_BLK_FLUSH;
	} else {
		printf("blk: flush not offered\n");
	}
	if ((rc = do_get_id()))
		return rc;
	u64 mib = cmdline_uint("seqread", 0);
	if (mib && (rc = do_seqread(mib, capacity)))
		return rc;
	if (cmdline_uint("badreq", 0) && (rc = do_badreq(s == NO_VALUE ? 0 : s)))
		return rc;
	printf("blk: ok\n");
	return EXIT_OK;
}
