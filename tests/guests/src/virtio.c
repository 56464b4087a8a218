/*
 * Minimal virtio 1.x PCI driver for the test guests (see virtio.h).
 */
#include "virtio.h"

/* Vendor capability (struct virtio_pci_cap) offsets from the capability. */
#define VCAP_CFG_TYPE   3
#define VCAP_BAR        4
#define VCAP_OFFSET     8
#define VCAP_LENGTH     12
#define VCAP_NOTIFY_MULT 16

#define CAP_ID_VENDOR 0x09
#define CAP_MAX_WALK  48

#define CFG_COMMON 1
#define CFG_NOTIFY 2
#define CFG_ISR    3
#define CFG_DEVICE 4

/* struct virtio_pci_common_cfg offsets. */
#define CC_DEVICE_FEATURE_SELECT 0x00
#define CC_DEVICE_FEATURE        0x04
#define CC_DRIVER_FEATURE_SELECT 0x08
#define CC_DRIVER_FEATURE        0x0c
#define CC_MSIX_CONFIG           0x10
#define CC_NUM_QUEUES            0x12
#define CC_DEVICE_STATUS         0x14
#define CC_CONFIG_GENERATION     0x15
#define CC_QUEUE_SELECT          0x16
#define CC_QUEUE_SIZE            0x18
#define CC_QUEUE_MSIX_VECTOR     0x1a
#define CC_QUEUE_ENABLE          0x1c
#define CC_QUEUE_NOTIFY_OFF      0x1e
#define CC_QUEUE_DESC            0x20
#define CC_QUEUE_DRIVER          0x28
#define CC_QUEUE_DEVICE          0x30
#define COMMON_CFG_LEN           0x38

#define NO_VECTOR 0xffff

/* Queue page layout: descriptors, then the avail ring, the used ring at 2 KiB. */
#define VQ_AVAIL_OFF(size) ((u32)(size) * 16)
#define VQ_USED_OFF 2048

static u8 vq_pool[VQ_POOL][4096] __attribute__((aligned(4096)));
static int vq_pool_used;

static inline void compiler_barrier(void)
{
	__asm__ volatile("" ::: "memory");
}

static inline u8 rd8(u64 a) { return *(volatile u8 *)a; }
static inline u16 rd16(u64 a) { return *(volatile u16 *)a; }
static inline u32 rd32(u64 a) { return *(volatile u32 *)a; }
static inline void wr8(u64 a, u8 v) { *(volatile u8 *)a = v; }
static inline void wr16(u64 a, u16 v) { *(volatile u16 *)a = v; }
static inline void wr32(u64 a, u32 v) { *(volatile u32 *)a = v; }

static void wr64(u64 a, u64 v)
{
	wr32(a, (u32)v);
	wr32(a + 4, (u32)(v >> 32));
}

u8 virtio_status(const struct virtio_pci *d)
{
	return rd8(d->common + CC_DEVICE_STATUS);
}

static void set_status(const struct virtio_pci *d, u8 s)
{
	wr8(d->common + CC_DEVICE_STATUS, s);
}

int virtio_open(struct virtio_pci *d, u16 device_id, int slot)
{
	memset(d, 0, sizeof(*d));
	if (!pci_find(VIRTIO_VENDOR, device_id, slot, &d->pci)) {
		if (slot >= 0)
			printf("virtio: no device 0x%x at slot %d\n", device_id, slot);
		else
			printf("virtio: no device 0x%x on bus 0\n", device_id);
		return EXIT_VIRTIO_NO_DEVICE;
	}
	const struct pci_fn *f = &d->pci;
	if (!(pci_read16(f, PCI_STATUS) & PCI_STATUS_CAP_LIST)) {
		printf("virtio: 00:%02x.%u has no capability list\n", f->slot, f->fn);
		return EXIT_VIRTIO_BAD_CAPS;
	}
	pci_enable_memory_master(f);

	u64 bar_addr[6] = {0};
	u8 have = 0;
	u8 p = pci_read8(f, PCI_CAP_PTR) & 0xfc;
	int common_bar = -1;
	for (int n = 0; p >= 0x40 && n < CAP_MAX_WALK; n++) {
		u32 w0 = pci_read32(f, p); /* id, next, len, cfg_type */
		u8 id = (u8)w0, next = (u8)(w0 >> 8) & 0xfc, type = (u8)(w0 >> 24);
		if (id == CAP_ID_VENDOR && type >= CFG_COMMON && type <= CFG_DEVICE && !(have & (1u << type))) {
			u8 bar = pci_read8(f, (u8)(p + VCAP_BAR));
			u32 off = pci_read32(f, (u8)(p + VCAP_OFFSET));
			u32 len = pci_read32(f, (u8)(p + VCAP_LENGTH));
			if (bar > 5) {
				p = next;
				continue; /* reserved BAR values: skip the capability */
			}
			if (!bar_addr[bar]) {
				bar_addr[bar] = pci_bar_address(f, bar);
				if (!bar_addr[bar])
					bar_addr[bar] = pci_assign_bar(f, bar);
				if (!bar_addr[bar]) {
					printf("virtio: 00:%02x.%u BAR %u is unassigned and could not be placed\n", f->slot,
					       f->fn, bar);
					return EXIT_VIRTIO_BAD_CAPS;
				}
			}
			u64 addr = bar_addr[bar] + off;
			if (!map_mmio(addr, len ? len : 1)) {
				printf("virtio: cannot map 0x%lx+0x%x\n", addr, len);
				return EXIT_VIRTIO_BAD_CAPS;
			}
			have |= (u8)(1u << type);
			switch (type) {
			case CFG_COMMON:
				if (len < COMMON_CFG_LEN) {
					printf("virtio: common configuration of %u bytes\n", len);
					return EXIT_VIRTIO_BAD_CAPS;
				}
				d->common = addr;
				common_bar = bar;
				break;
			case CFG_NOTIFY:
				d->notify = addr;
				d->notify_mult = pci_read32(f, (u8)(p + VCAP_NOTIFY_MULT));
				break;
			case CFG_ISR:
				d->isr = addr;
				break;
			case CFG_DEVICE:
				d->device = addr;
				d->device_len = len;
				break;
			}
		}
		p = next;
	}
	u8 need = (1u << CFG_COMMON) | (1u << CFG_NOTIFY) | (1u << CFG_ISR) | (1u << CFG_DEVICE);
	if ((have & need) != need) {
		printf("virtio: 00:%02x.%u lacks capabilities (found mask 0x%x, need 0x%x)\n",
		       f->slot, f->fn, have, need);
		return EXIT_VIRTIO_BAD_CAPS;
	}
	printf("virtio: 00:%02x.%u dev 0x%x bar %d at 0x%lx\n", f->slot, f->fn, device_id,
	       common_bar, bar_addr[common_bar]);
	return 0;
}

int virtio_negotiate(struct virtio_pci *d, u64 wanted)
{
	set_status(d, 0);
	u64 deadline = rdtsc() + tsc_ticks_per_ms() * 1000;
	while (virtio_status(d) != 0) {
		if (rdtsc() > deadline) {
			printf("virtio: device did not reset (status 0x%x)\n", virtio_status(d));
			return EXIT_VIRTIO_FEATURES;
		}
		cpu_relax();
	}
	set_status(d, VIRTIO_S_ACKNOWLEDGE);
	set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER);

	wr32(d->common + CC_DEVICE_FEATURE_SELECT, 0);
	u64 lo = rd32(d->common + CC_DEVICE_FEATURE);
	wr32(d->common + CC_DEVICE_FEATURE_SELECT, 1);
	u64 hi = rd32(d->common + CC_DEVICE_FEATURE);
	d->offered = hi << 32 | lo;
	if (!(d->offered & VIRTIO_F_VERSION_1)) {
		printf("virtio: device does not offer VERSION_1 (features 0x%lx)\n", d->offered);
		set_status(d, VIRTIO_S_FAILED);
		return EXIT_VIRTIO_FEATURES;
	}
	d->accepted = (d->offered & wanted) | VIRTIO_F_VERSION_1;
	wr32(d->common + CC_DRIVER_FEATURE_SELECT, 0);
	wr32(d->common + CC_DRIVER_FEATURE, (u32)d->accepted);
	wr32(d->common + CC_DRIVER_FEATURE_SELECT, 1);
	wr32(d->common + CC_DRIVER_FEATURE, (u32)(d->accepted >> 32));
	set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK);
	u8 st = virtio_status(d);
	printf("virtio: features offered 0x%lx accepted 0x%lx\n", d->offered, d->accepted);
	if (!(st & VIRTIO_S_FEATURES_OK)) {
		printf("virtio: FEATURES_OK did not stick (status 0x%x)\n", st);
		set_status(d, VIRTIO_S_FAILED);
		return EXIT_VIRTIO_FEATURES;
	}
	return 0;
}

int virtio_queue_setup(struct virtio_pci *d, struct virtq *q, u16 index, u16 size)
{
	if (size < 2 || size > VQ_MAX_SIZE || (size & (size - 1))) {
		printf("virtio: queue size %u (want a power of two 2..%u)\n", size, VQ_MAX_SIZE);
		return EXIT_BAD_ARGS;
	}
	if (vq_pool_used >= VQ_POOL) {
		printf("virtio: no queue page left (%d in use)\n", vq_pool_used);
		return EXIT_VIRTIO_QUEUE;
	}
	u16 nq = rd16(d->common + CC_NUM_QUEUES);
	if (index >= nq) {
		printf("virtio: queue %u requested, device has %u\n", index, nq);
		return EXIT_VIRTIO_QUEUE;
	}
	wr16(d->common + CC_QUEUE_SELECT, index);
	u16 max = rd16(d->common + CC_QUEUE_SIZE);
	if (max == 0) {
		printf("virtio: queue %u unavailable (size 0)\n", index);
		return EXIT_VIRTIO_QUEUE;
	}
	while (size > max)
		size >>= 1;
	if (size < 2) {
		printf("virtio: queue %u too small (max %u)\n", index, max);
		return EXIT_VIRTIO_QUEUE;
	}
	u8 *page = vq_pool[vq_pool_used++];
	u64 *w = (u64 *)page;
	for (int i = 0; i < 4096 / 8; i++)
		w[i] = 0;
	q->index = index;
	q->size = size;
	q->avail_idx = 0;
	q->last_used = 0;
	q->kicks = 0;
	q->desc = (volatile struct vq_desc *)page;
	q->avail = (volatile u16 *)(page + VQ_AVAIL_OFF(size));
	q->used_hdr = (volatile u16 *)(page + VQ_USED_OFF);
	q->used_ring = (volatile struct vq_used_elem *)(page + VQ_USED_OFF + 4);
	q->avail[0] = VQ_AVAIL_F_NO_INTERRUPT;

	wr16(d->common + CC_QUEUE_SIZE, size);
	wr16(d->common + CC_QUEUE_MSIX_VECTOR, NO_VECTOR);
	wr64(d->common + CC_QUEUE_DESC, (u64)q->desc);
	wr64(d->common + CC_QUEUE_DRIVER, (u64)q->avail);
	wr64(d->common + CC_QUEUE_DEVICE, (u64)q->used_hdr);
	u16 notify_off = rd16(d->common + CC_QUEUE_NOTIFY_OFF);
	q->notify_addr = d->notify + (u64)notify_off * d->notify_mult;
	full_barrier();
	wr16(d->common + CC_QUEUE_ENABLE, 1);
	if (rd16(d->common + CC_QUEUE_ENABLE) != 1) {
		printf("virtio: queue %u did not enable\n", index);
		return EXIT_VIRTIO_QUEUE;
	}
	return 0;
}

int virtio_driver_ok(struct virtio_pci *d)
{
	set_status(d, VIRTIO_S_ACKNOWLEDGE | VIRTIO_S_DRIVER | VIRTIO_S_FEATURES_OK | VIRTIO_S_DRIVER_OK);
	u8 st = virtio_status(d);
	if (st & (VIRTIO_S_NEEDS_RESET | VIRTIO_S_FAILED) || !(st & VIRTIO_S_DRIVER_OK)) {
		printf("virtio: device refused DRIVER_OK (status 0x%x)\n", st);
		return EXIT_VIRTIO_NEEDS_RESET;
	}
	return 0;
}

u8 virtio_cfg8(const struct virtio_pci *d, u32 off)
{
	return off < d->device_len ? rd8(d->device + off) : 0;
}

u16 virtio_cfg16(const struct virtio_pci *d, u32 off)
{
	return off + 2 <= d->device_len ? rd16(d->device + off) : 0;
}

u32 virtio_cfg32(const struct virtio_pci *d, u32 off)
{
	return off + 4 <= d->device_len ? rd32(d->device + off) : 0;
}

u64 virtio_cfg64(const struct virtio_pci *d, u32 off)
{
	if (off + 8 > d->device_len)
		return 0;
	u64 v = 0;
	for (int try = 0; try < 8; try++) { /* until config_generation holds still */
		u8 gen = rd8(d->common + CC_CONFIG_GENERATION);
		v = (u64)rd32(d->device + off + 4) << 32 | rd32(d->device + off);
		if (rd8(d->common + CC_CONFIG_GENERATION) == gen)
			break;
	}
	return v;
}

void virtq_add(struct virtq *q, u16 head, const struct vq_buf *bufs, int n)
{
	for (int i = 0; i < n; i++) {
		u16 k = (u16)((head + i) & (q->size - 1));
		volatile struct vq_desc *dsc = &q->desc[k];
		dsc->addr = (u64)bufs[i].addr;
		dsc->len = bufs[i].len;
		dsc->flags = (u16)((i + 1 < n ? VQ_DESC_F_NEXT : 0) | (bufs[i].device_writes ? VQ_DESC_F_WRITE : 0));
		dsc->next = (u16)((k + 1) & (q->size - 1));
	}
	q->avail[2 + (q->avail_idx & (q->size - 1))] = head;
	compiler_barrier(); /* x86 keeps stores in order: ring entry before idx */
	q->avail_idx++;
	q->avail[1] = q->avail_idx;
}

void virtq_kick(struct virtq *q)
{
	full_barrier(); /* publish avail->idx before reading used->flags */
	if (q->used_hdr[0] & VQ_USED_F_NO_NOTIFY)
		return;
	wr16(q->notify_addr, q->index);
	q->kicks++;
}

int virtq_poll(struct virtq *q, u32 *id, u32 *len)
{
	if (q->used_hdr[1] == q->last_used)
		return 0;
	compiler_barrier(); /* x86 keeps loads in order: idx before the entry */
	volatile struct vq_used_elem *e = &q->used_ring[q->last_used & (q->size - 1)];
	*id = e->id;
	*len = e->len;
	q->last_used++;
	return 1;
}

int virtq_wait(struct virtio_pci *d, struct virtq *q, u64 timeout_ms, u32 *id, u32 *len)
{
	u64 per_ms = tsc_ticks_per_ms();
	u64 start = rdtsc();
	u64 check = start + 100 * per_ms;
	for (;;) {
		if (virtq_poll(q, id, len))
			return 0;
		cpu_relax();
		u64 now = rdtsc();
		if (now < check)
			continue;
		u8 st = virtio_status(d);
		if (st & VIRTIO_S_NEEDS_RESET) {
			printf("virtio: queue %u: device needs reset (status 0x%x)\n", q->index, st);
			return EXIT_VIRTIO_NEEDS_RESET;
		}
		if (now - start >= timeout_ms * per_ms) {
			printf("virtio: queue %u: nothing used within %lu ms (avail %u, used %u, kicks %u, status 0x%x)\n",
			       q->index, timeout_ms, q->avail_idx, q->used_hdr[1], q->kicks, st);
			return EXIT_VIRTIO_TIMEOUT;
		}
		check = now + 100 * per_ms;
	}
}

/* KVM's pvclock structure (struct pvclock_vcpu_time_info). */
struct pvclock {
	u32 version;
	u32 pad0;
	u64 tsc_timestamp;
	u64 system_time;
	u32 tsc_to_system_mul;
	signed char tsc_shift;
	u8 flags;
	u8 pad[2];
};

#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)

static struct pvclock tsc_pvclock __attribute__((aligned(64)));

static inline void wrmsr_kvm(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}

u64 virtio_tsc_khz(const char **src)
{
	u32 a, b, c, d;
	cpuid(1, 0, &a, &b, &c, &d);
	if (c & (1u << 31)) {
		cpuid(0x40000000, 0, &a, &b, &c, &d);
		int kvm = b == 0x4b4d564b && c == 0x564b4d56 && d == 0x4d; /* "KVMKVMKVM" */
		if (kvm && a >= 0x40000001) {
			cpuid(0x40000001, 0, &a, &b, &c, &d);
			if (a & KVM_FEATURE_CLOCKSOURCE2) {
				wrmsr_kvm(MSR_KVM_SYSTEM_TIME_NEW, (u64)&tsc_pvclock | 1);
				u32 mul = 0;
				int shift = 0;
				for (int i = 0; i < 1000; i++) {
					u32 v = *(volatile u32 *)&tsc_pvclock.version;
					compiler_barrier();
					mul = *(volatile u32 *)&tsc_pvclock.tsc_to_system_mul;
					shift = *(volatile signed char *)&tsc_pvclock.tsc_shift;
					compiler_barrier();
					if (v != 0 && !(v & 1) && v == *(volatile u32 *)&tsc_pvclock.version)
						break;
					mul = 0;
					cpu_relax();
				}
				wrmsr_kvm(MSR_KVM_SYSTEM_TIME_NEW, 0);
				if (mul) {
					/* ns = ((tsc << shift) * mul) >> 32, so kHz = 1e6 * 2^32 / mul >> shift. */
					u64 khz = (1000000ul << 32) / mul;
					khz = shift < 0 ? khz << -shift : khz >> shift;
					*src = "kvmclock";
					return khz;
				}
			}
		}
	}
	*src = "cpuid";
	return tsc_ticks_per_ms();
}
