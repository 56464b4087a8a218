/*
 * A minimal virtio 1.x PCI ("modern") driver for the test guests: finds the
 * function, walks its vendor capabilities, negotiates features, sets up
 * split virtqueues in static guest RAM, submits descriptor chains, kicks
 * through the notify region and polls the used ring (no interrupts: they
 * stay masked and the driver asks the device not to send them).
 *
 * Every wait is bounded by the TSC. Functions returning int give 0 on
 * success or an EXIT_* code from lib.h, after printing why.
 */
#ifndef CORRAL_GUEST_VIRTIO_H
#define CORRAL_GUEST_VIRTIO_H

#include "lib.h"
#include "pci.h"

#define VIRTIO_VENDOR      0x1af4
#define VIRTIO_DEV_NET     0x1041
#define VIRTIO_DEV_BLK     0x1042

/* Device status bits. */
#define VIRTIO_S_ACKNOWLEDGE 1
#define VIRTIO_S_DRIVER      2
#define VIRTIO_S_DRIVER_OK   4
#define VIRTIO_S_FEATURES_OK 8
#define VIRTIO_S_NEEDS_RESET 0x40
#define VIRTIO_S_FAILED      0x80

#define VIRTIO_F_VERSION_1 (1ul << 32)

/* Split virtqueue flags. */
#define VQ_DESC_F_NEXT  1
#define VQ_DESC_F_WRITE 2
#define VQ_AVAIL_F_NO_INTERRUPT 1
#define VQ_USED_F_NO_NOTIFY 1

/* Largest queue this driver sets up: desc, avail and used fit one page. */
#define VQ_MAX_SIZE 64
/* How many queues (pages) the static pool holds. */
#define VQ_POOL 4

struct vq_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
};

struct vq_used_elem {
	u32 id;
	u32 len;
};

/* One buffer of a descriptor chain. */
struct vq_buf {
	const void *addr;
	u32 len;
	int device_writes; /* VQ_DESC_F_WRITE */
};

struct virtq {
	u16 index;
	u16 size;
	u16 avail_idx; /* next avail->idx we publish */
	u16 last_used; /* used->idx we have consumed up to */
	volatile struct vq_desc *desc;
	volatile u16 *avail; /* flags, idx, ring[size], used_event */
	volatile u16 *used_hdr; /* flags, idx */
	volatile struct vq_used_elem *used_ring;
	u64 notify_addr;
	u32 kicks; /* notify writes done */
};

/* A virtio PCI function and its structures (guest-physical MMIO addresses). */
struct virtio_pci {
	struct pci_fn pci;
	u64 common;
	u64 notify;
	u32 notify_mult;
	u64 isr;
	u64 device;
	u32 device_len;
	u64 offered;  /* device features */
	u64 accepted; /* features the driver accepted */
};

/* Finds the device (slot >= 0: only there), enables memory decode and bus
 * mastering, and locates COMMON, NOTIFY, ISR and DEVICE. Prints
 * "virtio: 00:SS.F dev 0xDDDD bar B at 0xADDR". */
int virtio_open(struct virtio_pci *d, u16 device_id, int slot);

/* Resets the device, sets ACKNOWLEDGE and DRIVER, reads the offered
 * features, accepts (offered & wanted) | VERSION_1 (required) and checks
 * FEATURES_OK stuck. */
int virtio_negotiate(struct virtio_pci *d, u64 wanted);

/* Sets up queue index with at most size entries (a power of two <=
 * VQ_MAX_SIZE) in a page of the static pool and enables it. */
int virtio_queue_setup(struct virtio_pci *d, struct virtq *q, u16 index, u16 size);

/* Sets DRIVER_OK and checks the device did not fail. */
int virtio_driver_ok(struct virtio_pci *d);

/* Reads the device status register. */
u8 virtio_status(const struct virtio_pci *d);

/* Device configuration reads, retried while config_generation changes. */
u8 virtio_cfg8(const struct virtio_pci *d, u32 off);
u16 virtio_cfg16(const struct virtio_pci *d, u32 off);
u32 virtio_cfg32(const struct virtio_pci *d, u32 off);
u64 virtio_cfg64(const struct virtio_pci *d, u32 off);

/* Writes bufs as descriptors head..head+n-1 (chained) and publishes head in
 * the avail ring. The caller owns the descriptor numbering. No kick. */
void virtq_add(struct virtq *q, u16 head, const struct vq_buf *bufs, int n);

/* Notifies the device unless it asked not to be (VQ_USED_F_NO_NOTIFY). */
void virtq_kick(struct virtq *q);

/* Takes one used element if there is one: returns 1 and fills id/len. */
int virtq_poll(struct virtq *q, u32 *id, u32 *len);

/* Polls until a used element arrives or timeout_ms passes: 0, or
 * EXIT_VIRTIO_NEEDS_RESET / EXIT_VIRTIO_TIMEOUT after printing why. */
int virtq_wait(struct virtio_pci *d, struct virtq *q, u64 timeout_ms, u32 *id, u32 *len);

/*
 * Helpers for the throughput modes (net txflood/rxcount), where the driver
 * prepares descriptors once and then only moves heads through the rings.
 */

/* Writes descriptor i as a single buffer (no NEXT); flags VQ_DESC_F_WRITE
 * or 0. Not published: the caller puts i in the avail ring. */
static inline void virtq_set_desc(struct virtq *q, u16 i, const void *addr, u32 len, u16 flags)
{
	volatile struct vq_desc *dsc = &q->desc[i & (q->size - 1)];
	dsc->addr = (u64)addr;
	dsc->len = len;
	dsc->flags = flags;
	dsc->next = 0;
}

/* Publishes every head written to the avail ring so far (q->avail_idx
 * updated by the caller); kick afterwards. */
static inline void virtq_publish(struct virtq *q)
{
	__asm__ volatile("" ::: "memory"); /* x86 keeps stores in order: entries before idx */
	q->avail[1] = q->avail_idx;
}

/* TSC frequency in kHz for throughput figures: KVM's kvmclock
 * (MSR_KVM_SYSTEM_TIME_NEW, tsc_to_system_mul and tsc_shift) when the
 * hypervisor is KVM with CLOCKSOURCE2, else tsc_ticks_per_ms(). *src is
 * set to "kvmclock" or "cpuid". */
u64 virtio_tsc_khz(const char **src);

#endif
