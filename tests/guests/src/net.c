/*
 * net: drives the first virtio-net PCI function (or the one at slot=N) with
 * the polled virtio driver in virtio.c: DHCP for an address (or a static
 * one), then (udp=PORT) one UDP datagram to the router and its answer, and
 * the throughput modes txflood=N and rxcount=N.
 *
 * Command line (all optional):
 *   slot=N       use the function at bus 0 slot N
 *   qsize=N      receive and transmit queue size (power of two, default and
 *                most 64; less if the device offers less)
 *   ip=A.B.C.D   static address: no DHCP ("net: static A.B.C.D/P router R")
 *   router=R     with ip=: the router (needed by udp= and txflood=)
 *   prefix=P     with ip=: the prefix length (default 24)
 *   udp=PORT     after the lease, send "corral-net hello from A.B.C.D" from
 *                UDP port sport=P (default 40000) to the router's PORT and
 *                wait for a datagram back to sport
 *   txflood=N    ARP the router, then send N UDP frames of size=S bytes
 *                (Ethernet header to the end of the payload, 60..1514,
 *                default 64) from sport to the router's port floodport=P
 *                (default 9) as fast as the transmit ring takes them: every
 *                free descriptor is posted before one kick once at least
 *                txbatch=B are free (default qsize/4), used ones are
 *                reclaimed in between. Prints
 *                "net: txflood N frames of S bytes to R:P: T ticks, U us,
 *                F frames/s, M MB/s, K kicks, idle I% (tsc H kHz, SRC)"
 *                (MB = 10^6 bytes of Ethernet frames, the virtio header not
 *                counted; time from the first post to the last frame used;
 *                idle: the share of it spent waiting for the device to
 *                give descriptors back, so near 0 means the guest, not the
 *                device, set the pace)
 *   rxcount=N    with every receive buffer posted, print "net: rxcount ready
 *                on A.B.C.D:P" and count N IPv4 UDP frames to port
 *                rxport=P (default 9), refilling the ring as they are used;
 *                prints "net: rxcount N frames, B bytes: T ticks, U us,
 *                F frames/s, M MB/s, seq S..E, O other, K kicks, idle I%
 *                (tsc H kHz, SRC)" (idle: the share of the span with the
 *                used ring empty; O: frames not counted, e.g. ARP),
 *                measured from the first counted frame to the Nth (N-1
 *                intervals; B counts those N-1 frames). seq is the
 *                big-endian 32-bit number at the start of the first and Nth
 *                payload (a sender may number its datagrams; E-S+1-N were
 *                sent in that span and not delivered). ARP requests for our
 *                address are answered meanwhile. rxcount needs N >= 2.
 *   timeout=MS   bound of each phase (DHCP, ARP, UDP, and the whole of
 *                txflood and rxcount; default 10000)
 *   retry=MS     DHCP/ARP retransmission interval (default 1000)
 *
 * Output (after the virtio: lines):
 *   net: mac xx:xx:xx:xx:xx:xx
 *   net: offer A.B.C.D from server S
 *   net: lease A.B.C.D/P router R server S lease T s
 *   net: router R is at xx:xx:xx:xx:xx:xx
 *   net: udp reply from R:PORT: <text>
 *   net: txflood ... / net: rxcount ready ... / net: rxcount ...
 *   net: ok
 * Frames are built by hand (Ethernet II, IPv4 without options, UDP with a
 * zero checksum, BOOTP/DHCP), broadcast until the lease. ARP requests for
 * the leased address are answered. Exit codes: EXIT_VIRTIO_*, EXIT_NET_*;
 * rxcount short of N frames within timeout=MS is EXIT_NET_UDP_TIMEOUT (after
 * "net: rxcount timeout ..."), a stalled txflood EXIT_VIRTIO_TIMEOUT.
 */
#include "virtio.h"

#define NET_F_MAC (1ul << 5)

#define NET_HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define RX_BUFS VQ_MAX_SIZE /* one per receive descriptor */
#define BUF_SIZE 2048
#define ETH_MIN 60
#define ETH_MAX 1514 /* without FCS, MTU 1500 */
#define TEXT_MAX 64

/* Offsets in an Ethernet frame (no VLAN tag). */
#define ETH_DST 0
#define ETH_SRC 6
#define ETH_TYPE 12
#define ETH_HLEN 14
#define ETHERTYPE_IP 0x0800
#define ETHERTYPE_ARP 0x0806

#define IP_HLEN 20
#define IPPROTO_UDP 17
#define UDP_HLEN 8

/* BOOTP offsets from the start of the UDP payload. */
#define BOOTP_OP 0
#define BOOTP_XID 4
#define BOOTP_FLAGS 10
#define BOOTP_YIADDR 16
#define BOOTP_CHADDR 28
#define BOOTP_MAGIC 236
#define BOOTP_OPTIONS 240
#define DHCP_MAGIC 0x63825363u

#define DHCP_DISCOVER 1
#define DHCP_OFFER 2
#define DHCP_REQUEST 3
#define DHCP_ACK 5
#define DHCP_NAK 6

#define OPT_PAD 0
#define OPT_MASK 1
#define OPT_ROUTER 3
#define OPT_REQ_IP 50
#define OPT_LEASE 51
#define OPT_MSG_TYPE 53
#define OPT_SERVER_ID 54
#define OPT_PARAMS 55
#define OPT_END 255

#define ARP_REQUEST 1
#define ARP_REPLY 2

#define RX_TIMEOUT 1 /* rx_next: deadline passed */

/* A 16-bit load from a byte buffer (little-endian, as x86 loads it). */
typedef u16 __attribute__((may_alias)) u16_alias;

static struct virtio_pci dev;
static struct virtq rxq, txq;
static u8 rx_bufs[RX_BUFS][BUF_SIZE] __attribute__((aligned(4096)));
static u8 tx_buf[BUF_SIZE] __attribute__((aligned(64)));
/* txflood: every transmit descriptor points at this one frame (the device
 * only reads it). */
static u8 flood_buf[BUF_SIZE] __attribute__((aligned(64)));
static u64 timeout_ms, retry_ms;

static u8 mac[6];
static u32 my_ip, router_ip, server_ip, netmask, lease_s;
static u8 router_mac[6];
static u32 xid;

static void put16(u8 *p, u16 v)
{
	p[0] = (u8)(v >> 8);
	p[1] = (u8)v;
}

static void put32(u8 *p, u32 v)
{
	p[0] = (u8)(v >> 24);
	p[1] = (u8)(v >> 16);
	p[2] = (u8)(v >> 8);
	p[3] = (u8)v;
}

static u16 get16(const u8 *p)
{
	return (u16)(p[0] << 8 | p[1]);
}

static u32 get32(const u8 *p)
{
	return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3];
}

static int mac_eq(const u8 *a, const u8 *b)
{
	for (int i = 0; i < 6; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* "A.B.C.D" into a caller buffer of at least 16 bytes. */
static const char *ip_str(u32 ip, char *buf)
{
	char *p = buf;
	for (int i = 3; i >= 0; i--) {
		u32 o = (ip >> (8 * i)) & 0xff;
		if (o >= 100)
			*p++ = (char)('0' + o / 100);
		if (o >= 10)
			*p++ = (char)('0' + o / 10 % 10);
		*p++ = (char)('0' + o % 10);
		if (i)
			*p++ = '.';
	}
	*p = '\0';
	return buf;
}

static void print_mac(const char *what, const u8 *m)
{
	printf("%s%02x:%02x:%02x:%02x:%02x:%02x\n", what, m[0], m[1], m[2], m[3], m[4], m[5]);
}

static u16 ip_checksum(const u8 *p, int n)
{
	u32 sum = 0;
	for (int i = 0; i + 1 < n; i += 2)
		sum += (u32)(p[i] << 8 | p[i + 1]);
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (u16)~sum;
}

/* Parses "A.B.C.D" into *ip; 0 if malformed. */
static int parse_ip(const char *s, u32 *ip)
{
	u32 v = 0;
	for (int part = 0; part < 4; part++) {
		u32 o = 0;
		int digits = 0;
		for (; *s >= '0' && *s <= '9'; s++) {
			o = o * 10 + (u32)(*s - '0');
			if (++digits > 3 || o > 255)
				return 0;
		}
		if (!digits || *s != (part < 3 ? '.' : '\0'))
			return 0;
		s++;
		v = v << 8 | o;
	}
	*ip = v;
	return 1;
}

static void rx_post(u32 slot)
{
	struct vq_buf b = {.addr = rx_bufs[slot], .len = BUF_SIZE, .device_writes = 1};
	virtq_add(&rxq, (u16)slot, &b, 1);
}

/* Sends the frame at tx_buf + NET_HDR_LEN and waits until the device took it. */
static int tx_send(u32 len)
{
	if (len < ETH_MIN) {
		memset(tx_buf + NET_HDR_LEN + len, 0, ETH_MIN - len);
		len = ETH_MIN;
	}
	memset(tx_buf, 0, NET_HDR_LEN);
	struct vq_buf b = {.addr = tx_buf, .len = NET_HDR_LEN + len};
	virtq_add(&txq, 0, &b, 1);
	virtq_kick(&txq);
	u32 id, ulen;
	return virtq_wait(&dev, &txq, timeout_ms, &id, &ulen);
}

/* Ethernet + IPv4 + UDP headers at f, in front of n payload bytes already
 * at f + 42. Returns the frame length. */
static u32 build_udp_at(u8 *f, const u8 *dst_mac, u32 src, u32 dst, u16 sport, u16 dport, u32 n)
{
	for (int i = 0; i < 6; i++) {
		f[ETH_DST + i] = dst_mac[i];
		f[ETH_SRC + i] = mac[i];
	}
	put16(f + ETH_TYPE, ETHERTYPE_IP);
	u8 *ip = f + ETH_HLEN;
	ip[0] = 0x45;
	ip[1] = 0;
	put16(ip + 2, (u16)(IP_HLEN + UDP_HLEN + n));
	put16(ip + 4, (u16)rdtsc());
	put16(ip + 6, 0x4000); /* don't fragment */
	ip[8] = 64;
	ip[9] = IPPROTO_UDP;
	put16(ip + 10, 0);
	put32(ip + 12, src);
	put32(ip + 16, dst);
	put16(ip + 10, ip_checksum(ip, IP_HLEN));
	u8 *udp = ip + IP_HLEN;
	put16(udp, sport);
	put16(udp + 2, dport);
	put16(udp + 4, (u16)(UDP_HLEN + n));
	put16(udp + 6, 0); /* no checksum (allowed for IPv4) */
	return ETH_HLEN + IP_HLEN + UDP_HLEN + n;
}

/* build_udp_at for the frame in tx_buf. */
static u32 build_udp(const u8 *dst_mac, u32 src, u32 dst, u16 sport, u16 dport, u32 n)
{
	return build_udp_at(tx_buf + NET_HDR_LEN, dst_mac, src, dst, sport, dport, n);
}

static int send_dhcp(u8 type)
{
	static const u8 bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	u8 *b = tx_buf + NET_HDR_LEN + ETH_HLEN + IP_HLEN + UDP_HLEN;
	memset(b, 0, BOOTP_OPTIONS);
	b[BOOTP_OP] = 1;
	b[1] = 1; /* htype Ethernet */
	b[2] = 6; /* hlen */
	put32(b + BOOTP_XID, xid);
	put16(b + BOOTP_FLAGS, 0x8000); /* broadcast replies: we have no address yet */
	for (int i = 0; i < 6; i++)
		b[BOOTP_CHADDR + i] = mac[i];
	put32(b + BOOTP_MAGIC, DHCP_MAGIC);
	u8 *o = b + BOOTP_OPTIONS;
	*o++ = OPT_MSG_TYPE;
	*o++ = 1;
	*o++ = type;
	if (type == DHCP_REQUEST) {
		*o++ = OPT_REQ_IP;
		*o++ = 4;
		put32(o, my_ip);
		o += 4;
		*o++ = OPT_SERVER_ID;
		*o++ = 4;
		put32(o, server_ip);
		o += 4;
	}
	*o++ = OPT_PARAMS;
	*o++ = 3;
	*o++ = OPT_MASK;
	*o++ = OPT_ROUTER;
	*o++ = OPT_LEASE;
	*o++ = OPT_END;
	u32 n = (u32)(o - b);
	if (n < 300) { /* BOOTP minimum */
		memset(o, 0, 300 - n);
		n = 300;
	}
	return tx_send(build_udp(bcast, 0, 0xffffffffu, 68, 67, n));
}

static int send_arp(u16 op, const u8 *tha, u32 tpa)
{
	u8 *f = tx_buf + NET_HDR_LEN;
	for (int i = 0; i < 6; i++) {
		f[ETH_DST + i] = op == ARP_REQUEST ? 0xff : tha[i];
		f[ETH_SRC + i] = mac[i];
	}
	put16(f + ETH_TYPE, ETHERTYPE_ARP);
	u8 *a = f + ETH_HLEN;
	put16(a, 1);
	put16(a + 2, ETHERTYPE_IP);
	a[4] = 6;
	a[5] = 4;
	put16(a + 6, op);
	for (int i = 0; i < 6; i++) {
		a[8 + i] = mac[i];
		a[18 + i] = op == ARP_REQUEST ? 0 : tha[i];
	}
	put32(a + 14, my_ip);
	put32(a + 24, tpa);
	return tx_send(ETH_HLEN + 28);
}

/* Waits for a received frame until deadline: 0 with slot, frame and len set,
 * RX_TIMEOUT, or an exit code. */
static int rx_next(u64 deadline, u32 *slot, u8 **frame, u32 *len)
{
	u32 id, ulen;
	while (!virtq_poll(&rxq, &id, &ulen)) {
		if (rdtsc() > deadline) {
			u8 st = virtio_status(&dev);
			if (st & VIRTIO_S_NEEDS_RESET) {
				printf("net: device needs reset (status 0x%x)\n", st);
				return EXIT_VIRTIO_NEEDS_RESET;
			}
			return RX_TIMEOUT;
		}
		cpu_relax();
	}
	if (id >= rxq.size || ulen > BUF_SIZE) {
		printf("net: device used rx descriptor %u with length %u\n", id, ulen);
		return EXIT_VIRTIO_QUEUE;
	}
	*slot = id;
	*frame = rx_bufs[id] + NET_HDR_LEN;
	*len = ulen > NET_HDR_LEN ? ulen - NET_HDR_LEN : 0;
	return 0;
}

static void rx_done(u32 slot)
{
	rx_post(slot);
	virtq_kick(&rxq);
}

/* Answers an ARP request for our address; returns 1 if f was ARP. Sets
 * router_mac from a reply (or request) sent by the router. */
static int handle_arp(const u8 *f, u32 len, int *rc)
{
	*rc = 0;
	if (len < ETH_HLEN + 28 || get16(f + ETH_TYPE) != ETHERTYPE_ARP)
		return 0;
	const u8 *a = f + ETH_HLEN;
	if (get16(a) != 1 || get16(a + 2) != ETHERTYPE_IP || a[4] != 6 || a[5] != 4)
		return 1;
	u16 op = get16(a + 6);
	u32 spa = get32(a + 14), tpa = get32(a + 24);
	if (router_ip && spa == router_ip)
		for (int i = 0; i < 6; i++)
			router_mac[i] = a[8 + i];
	if (op == ARP_REQUEST && my_ip && tpa == my_ip) {
		u8 sha[6];
		for (int i = 0; i < 6; i++)
			sha[i] = a[8 + i];
		*rc = send_arp(ARP_REPLY, sha, spa);
	}
	return 1;
}

/* The UDP payload of an IPv4/UDP frame to dport (0: any), or NULL. */
static const u8 *udp_payload(const u8 *f, u32 len, u16 dport, u32 *n, u32 *src, u16 *sport)
{
	if (len < ETH_HLEN + IP_HLEN + UDP_HLEN || get16(f + ETH_TYPE) != ETHERTYPE_IP)
		return NULL;
	const u8 *ip = f + ETH_HLEN;
	u32 ihl = (u32)(ip[0] & 0xf) * 4;
	if ((ip[0] >> 4) != 4 || ihl < IP_HLEN || ip[9] != IPPROTO_UDP || (get16(ip + 6) & 0x3fff))
		return NULL; /* not IPv4 UDP, or a fragment */
	u32 total = get16(ip + 2);
	if (total > len - ETH_HLEN || total < ihl + UDP_HLEN)
		return NULL;
	const u8 *udp = ip + ihl;
	u32 ulen = get16(udp + 4);
	if (ulen < UDP_HLEN || ulen > total - ihl)
		return NULL;
	if (dport && get16(udp + 2) != dport)
		return NULL;
	*n = ulen - UDP_HLEN;
	*src = get32(ip + 12);
	*sport = get16(udp);
	return udp + UDP_HLEN;
}

/* Parses a DHCP reply for our xid and MAC: its message type, or 0. */
static int dhcp_reply(const u8 *f, u32 len, u32 *yiaddr)
{
	u32 n, src;
	u16 sport;
	const u8 *b = udp_payload(f, len, 68, &n, &src, &sport);
	if (!b || n < BOOTP_OPTIONS || b[BOOTP_OP] != 2 || get32(b + BOOTP_XID) != xid ||
	    !mac_eq(b + BOOTP_CHADDR, mac) || get32(b + BOOTP_MAGIC) != DHCP_MAGIC)
		return 0;
	*yiaddr = get32(b + BOOTP_YIADDR);
	int type = 0;
	u32 server = 0, router = 0, mask = 0, lease = 0;
	for (u32 i = BOOTP_OPTIONS; i < n;) {
		u8 code = b[i];
		if (code == OPT_END)
			break;
		if (code == OPT_PAD) {
			i++;
			continue;
		}
		if (i + 2 > n || i + 2 + b[i + 1] > n)
			break;
		u8 l = b[i + 1];
		const u8 *v = b + i + 2;
		if (code == OPT_MSG_TYPE && l >= 1)
			type = v[0];
		else if (code == OPT_SERVER_ID && l >= 4)
			server = get32(v);
		else if (code == OPT_ROUTER && l >= 4)
			router = get32(v);
		else if (code == OPT_MASK && l >= 4)
			mask = get32(v);
		else if (code == OPT_LEASE && l >= 4)
			lease = get32(v);
		i += 2u + l;
	}
	if (type == DHCP_OFFER || type == DHCP_ACK) {
		server_ip = server ? server : src;
		if (router)
			router_ip = router;
		if (mask)
			netmask = mask;
		lease_s = lease;
	}
	return type;
}

#define REPLY_DONE (-1) /* a reply callback's "this frame ends the exchange" */

/* The request-reply loop of DHCP and ARP: send(ctx) is repeated every
 * retry_ms until reply(ctx, ...) returns REPLY_DONE for a received frame or
 * timeout_ms passes. reply sees each frame after handle_arp answered it
 * (is_arp says whether it was ARP) and returns 0 to keep waiting, REPLY_DONE
 * or an exit code. Returns 0, RX_TIMEOUT (with *sent requests sent) or an
 * exit code. */
static int send_until(int (*send)(const void *ctx), int (*reply)(const void *ctx, const u8 *f, u32 len, int is_arp),
		      const void *ctx, int *sent)
{
	u64 per_ms = tsc_ticks_per_ms();
	u64 end = rdtsc() + timeout_ms * per_ms;
	for (*sent = 1;; ++*sent) {
		int rc = send(ctx);
		if (rc)
			return rc;
		u64 resend = rdtsc() + retry_ms * per_ms;
		if (resend > end)
			resend = end;
		for (;;) {
			u32 slot, len;
			u8 *f;
			rc = rx_next(resend, &slot, &f, &len);
			if (rc == RX_TIMEOUT)
				break;
			if (rc)
				return rc;
			int arc;
			int is_arp = handle_arp(f, len, &arc);
			int r = arc ? 0 : reply(ctx, f, len, is_arp);
			rx_done(slot);
			if (arc)
				return arc;
			if (r == REPLY_DONE)
				return 0;
			if (r)
				return r;
		}
		if (rdtsc() >= end)
			return RX_TIMEOUT;
	}
}

struct dhcp_step {
	u8 type;           /* what we send */
	int want;          /* the reply that ends the step */
	const char *phase; /* for messages */
};

static int dhcp_send(const void *ctx)
{
	return send_dhcp(((const struct dhcp_step *)ctx)->type);
}

static int dhcp_got(const void *ctx, const u8 *f, u32 len, int is_arp)
{
	const struct dhcp_step *st = ctx;
	u32 yiaddr = 0;
	int got = is_arp ? 0 : dhcp_reply(f, len, &yiaddr);
	if (got == DHCP_NAK) {
		printf("net: DHCP NAK in %s\n", st->phase);
		return EXIT_NET_DHCP_NAK;
	}
	if (got != st->want)
		return 0;
	my_ip = yiaddr;
	return REPLY_DONE;
}

/* Sends DHCP type and waits for a reply of want (or NAK), resending every
 * retry_ms until timeout_ms. */
static int dhcp_exchange(u8 type, int want, const char *phase)
{
	const struct dhcp_step st = {type, want, phase};
	int sent;
	int rc = send_until(dhcp_send, dhcp_got, &st, &sent);
	if (rc == RX_TIMEOUT) {
		printf("net: no DHCP %s within %lu ms (%d sent)\n", phase, timeout_ms, sent);
		return EXIT_NET_DHCP_TIMEOUT;
	}
	return rc;
}

static int arp_send(const void *ctx)
{
	static const u8 zero[6];
	(void)ctx;
	return send_arp(ARP_REQUEST, zero, router_ip);
}

static int arp_got(const void *ctx, const u8 *f, u32 len, int is_arp)
{
	char ip[16];
	(void)ctx;
	(void)len;
	if (!is_arp || get16(f + ETH_HLEN + 6) != ARP_REPLY || get32(f + ETH_HLEN + 14) != router_ip)
		return 0;
	printf("net: router %s is at ", ip_str(router_ip, ip));
	print_mac("", router_mac);
	return REPLY_DONE;
}

static int arp_router(void)
{
	char ip[16];
	int sent;
	int rc = send_until(arp_send, arp_got, NULL, &sent);
	if (rc == RX_TIMEOUT) {
		printf("net: router %s did not answer ARP within %lu ms (%d sent)\n", ip_str(router_ip, ip), timeout_ms,
		       sent);
		return EXIT_NET_ARP_TIMEOUT;
	}
	return rc;
}

static int udp_exchange(u16 dport, u16 sport)
{
	char a[16], r[16];
	static const char prefix[] = "corral-net hello from ";
	u8 *p = tx_buf + NET_HDR_LEN + ETH_HLEN + IP_HLEN + UDP_HLEN;
	u32 n = 0;
	for (; prefix[n]; n++)
		p[n] = (u8)prefix[n];
	ip_str(my_ip, a);
	for (u32 i = 0; a[i]; i++)
		p[n++] = (u8)a[i];
	int rc = tx_send(build_udp(router_mac, my_ip, router_ip, sport, dport, n));
	if (rc)
		return rc;
	u64 end = rdtsc() + timeout_ms * tsc_ticks_per_ms();
	for (;;) {
		u32 slot, len;
		u8 *f;
		rc = rx_next(end, &slot, &f, &len);
		if (rc == RX_TIMEOUT) {
			printf("net: no UDP reply to port %u within %lu ms\n", sport, timeout_ms);
			return EXIT_NET_UDP_TIMEOUT;
		}
		if (rc)
			return rc;
		int arc;
		u32 plen = 0, src = 0;
		u16 from = 0;
		const u8 *pl = handle_arp(f, len, &arc) ? NULL : udp_payload(f, len, sport, &plen, &src, &from);
		if (pl) {
			char text[TEXT_MAX + 1];
			u32 k = 0;
			for (; k < plen && k < TEXT_MAX; k++)
				text[k] = pl[k] >= 0x20 && pl[k] < 0x7f ? (char)pl[k] : '.';
			text[k] = '\0';
			printf("net: udp reply from %s:%u: %s\n", ip_str(src, r), from, text);
		}
		rx_done(slot);
		if (arc)
			return arc;
		if (pl)
			return 0;
	}
}

/* A throughput figure from a TSC interval. */
struct rate {
	u64 us;        /* elapsed microseconds (at least 1) */
	u64 fps;       /* frames per second */
	u64 centi_mbs; /* MB/s (10^6 bytes) x 100 */
	u64 khz;       /* TSC rate used */
	const char *src;
};

static struct rate rate_of(u64 ticks, u64 frames, u64 bytes)
{
	struct rate r;
	r.src = "cpuid";
	r.khz = virtio_tsc_khz(&r.src);
	r.us = ticks * 1000 / r.khz;
	if (r.us == 0)
		r.us = 1;
	r.fps = frames * 1000000 / r.us;
	r.centi_mbs = bytes * 100 / r.us; /* bytes per us = MB/s */
	return r;
}

/* txflood=N: N frames of size bytes to the router's dport. Every transmit
 * descriptor is prepared once and points at flood_buf, so per frame only a
 * head moves: the ids the device gives back in the used ring are posted
 * again straight from there (at first, 0..size-1). The loops keep the ring
 * state in locals: each instruction costs here (see doc.go). */
__attribute__((noinline)) static int tx_flood(u64 n, u32 size, u16 sport, u16 dport, u32 batch)
{
	char r[16];
	if (n == 0 || size < ETH_MIN || size > ETH_MAX || !router_ip) {
		printf("net: txflood=%lu size=%u: want N > 0, size %u..%u and a router\n", n, size, ETH_MIN, ETH_MAX);
		return EXIT_BAD_ARGS;
	}
	const u16 qs = txq.size, mask = (u16)(qs - 1);
	if (batch == 0)
		batch = qs / 4 ? qs / 4 : 1;
	if (batch > qs)
		batch = qs;
	u32 payload = size - (ETH_HLEN + IP_HLEN + UDP_HLEN);
	u8 *f = flood_buf + NET_HDR_LEN;
	static const char tag[] = "corral-net txflood";
	for (u32 i = 0; tag[i] && i < payload; i++)
		f[ETH_HLEN + IP_HLEN + UDP_HLEN + i] = (u8)tag[i];
	build_udp_at(f, router_mac, my_ip, router_ip, sport, dport, payload);
	memset(flood_buf, 0, NET_HDR_LEN);
	for (u16 i = 0; i < qs; i++)
		virtq_set_desc(&txq, i, flood_buf, NET_HDR_LEN + size, 0);

	volatile u16 *ring = txq.avail + 2;
	volatile const u16 *used_idx = txq.used_hdr + 1;
	volatile const struct vq_used_elem *used = txq.used_ring;
	u16 avail = txq.avail_idx;   /* next avail entry */
	u16 reposted = txq.last_used; /* used entries up to here are posted again */
	u16 fresh = 0;               /* descriptors never posted: fresh..qs-1 */
	u64 limit = timeout_ms * tsc_ticks_per_ms();
	u32 kicks0 = txq.kicks;
	u64 left = n;
	u64 idle = 0, idle_since = 0; /* TSC ticks spent waiting for the device */
	u64 t0 = rdtsc();
	while (left) {
		u16 done = *used_idx;
		u32 room = (u32)(u16)(done - reposted) + (u32)(qs - fresh);
		if (room > qs) {
			printf("net: txflood: used index %u is past what was posted (%u)\n", done, avail);
			return EXIT_VIRTIO_QUEUE;
		}
		if (room > left)
			room = (u32)left;
		if (room < batch && room < left) { /* wait for a fuller batch */
			cpu_relax();
			u64 now = rdtsc();
			if (!idle_since)
				idle_since = now;
			if (now - t0 > limit) {
				printf("net: txflood: %lu of %lu frames sent within %lu ms (used %u, avail %u, kicks %u)\n",
				       n - left, n, timeout_ms, done, avail, txq.kicks - kicks0);
				return EXIT_VIRTIO_TIMEOUT;
			}
			continue;
		}
		if (idle_since) {
			idle += rdtsc() - idle_since;
			idle_since = 0;
		}
		left -= room;
		for (; room && fresh < qs; room--)
			ring[avail++ & mask] = fresh++;
		for (; room; room--) {
			u32 id = used[reposted++ & mask].id;
			if (id >= qs) {
				printf("net: txflood: device used descriptor %u (queue size %u)\n", id, qs);
				return EXIT_VIRTIO_QUEUE;
			}
			ring[avail++ & mask] = (u16)id;
		}
		txq.avail_idx = avail;
		virtq_publish(&txq);
		virtq_kick(&txq);
	}
	u64 drain = rdtsc();
	while (*used_idx != avail) {
		cpu_relax();
		if (rdtsc() - t0 > limit) {
			printf("net: txflood: device used %u of %u within %lu ms\n", *used_idx, avail, timeout_ms);
			return EXIT_VIRTIO_TIMEOUT;
		}
	}
	u64 t1 = rdtsc();
	u64 ticks = t1 - t0;
	idle += t1 - drain;
	txq.last_used = avail;
	struct rate rt = rate_of(ticks, n, n * size);
	u64 idle_pm = idle * 1000 / ticks;
	printf("net: txflood %lu frames of %u bytes to %s:%u: %lu ticks, %lu us, %lu frames/s, %lu.%02lu MB/s, "
	       "%u kicks, idle %lu.%lu%% (tsc %lu kHz, %s)\n", n, size, ip_str(router_ip, r), dport, ticks, rt.us,
	       rt.fps, rt.centi_mbs / 100, rt.centi_mbs % 100, txq.kicks - kicks0, idle_pm / 10, idle_pm % 10, rt.khz,
	       rt.src);
	return 0;
}

/* rxcount=N: counts N IPv4 UDP frames to dport with the whole receive ring
 * posted, giving each buffer back as soon as it is looked at (one publish
 * and at most one kick per batch of used buffers). */
__attribute__((noinline)) static int rx_count(u64 n, u16 dport)
{
	char a[16];
	if (n < 2) {
		printf("net: rxcount=%lu: want N >= 2\n", n);
		return EXIT_BAD_ARGS;
	}
	const u16 qs = rxq.size, mask = (u16)(qs - 1);
	const u16 port_be = (u16)(dport >> 8 | dport << 8); /* as a little-endian load sees it */
	volatile u16 *ring = rxq.avail + 2;
	volatile const u16 *used_idx = rxq.used_hdr + 1;
	volatile const struct vq_used_elem *used = rxq.used_ring;
	u16 avail = rxq.avail_idx, seen = rxq.last_used;
	u64 count = 0, bytes = 0, other = 0, t0 = 0, t1 = 0;
	u64 idle = 0, idle_since = 0; /* ticks with the used ring empty, after the first frame */
	u32 seq0 = 0, seq1 = 0;
	u32 kicks0 = rxq.kicks;
	printf("net: rxcount ready on %s:%u\n", ip_str(my_ip, a), dport);
	u64 limit = timeout_ms * tsc_ticks_per_ms();
	u64 start = rdtsc();
	while (count < n) {
		u16 done = *used_idx;
		if (done == seen) {
			cpu_relax();
			u64 now = rdtsc();
			if (!idle_since && count)
				idle_since = now;
			if (now - start > limit) {
				printf("net: rxcount timeout: %lu of %lu frames to port %u within %lu ms (%lu other)\n", count,
				       n, dport, timeout_ms, other);
				return EXIT_NET_UDP_TIMEOUT;
			}
			continue;
		}
		if ((u16)(done - seen) > qs) {
			printf("net: rxcount: used index %u is past what was posted (%u)\n", done, avail);
			return EXIT_VIRTIO_QUEUE;
		}
		__asm__ volatile("" ::: "memory"); /* frames are read after the used index */
		if (idle_since) {
			idle += rdtsc() - idle_since;
			idle_since = 0;
		}
		do {
			volatile const struct vq_used_elem *e = &used[seen++ & mask];
			u32 id = e->id, len = e->len;
			if (id >= qs || len > BUF_SIZE || len < NET_HDR_LEN) {
				printf("net: device used rx descriptor %u with length %u\n", id, len);
				return EXIT_VIRTIO_QUEUE;
			}
			const u8 *fr = rx_bufs[id] + NET_HDR_LEN;
			len -= NET_HDR_LEN;
			/* IPv4 (no options), UDP, to dport: bytes 12-13, 14, 23, 36-37. */
			if (len >= ETH_HLEN + IP_HLEN + UDP_HLEN && *(const u16_alias *)(fr + ETH_TYPE) == 0x0008 &&
			    fr[ETH_HLEN] == 0x45 && fr[ETH_HLEN + 9] == IPPROTO_UDP &&
			    *(const u16_alias *)(fr + ETH_HLEN + IP_HLEN + 2) == port_be) {
				if (count == 0) {
					t0 = rdtsc();
					seq0 = get32(fr + ETH_HLEN + IP_HLEN + UDP_HLEN);
				} else {
					bytes += len;
				}
				if (++count == n) {
					t1 = rdtsc();
					seq1 = get32(fr + ETH_HLEN + IP_HLEN + UDP_HLEN);
				}
			} else {
				int arc;
				other++;
				if (handle_arp(fr, len, &arc) && arc)
					return arc;
			}
			ring[avail++ & mask] = (u16)id;
		} while (seen != done && count < n);
		rxq.avail_idx = avail;
		virtq_publish(&rxq);
		virtq_kick(&rxq);
	}
	rxq.last_used = seen;
	struct rate rt = rate_of(t1 - t0, n - 1, bytes);
	u64 idle_pm = t1 > t0 ? idle * 1000 / (t1 - t0) : 0;
	printf("net: rxcount %lu frames, %lu bytes: %lu ticks, %lu us, %lu frames/s, %lu.%02lu MB/s, seq %u..%u, "
	       "%lu other, %u kicks, idle %lu.%lu%% (tsc %lu kHz, %s)\n", n, bytes, t1 - t0, rt.us, rt.fps,
	       rt.centi_mbs / 100, rt.centi_mbs % 100, seq0, seq1, other, rxq.kicks - kicks0, idle_pm / 10,
	       idle_pm % 10, rt.khz, rt.src);
	return 0;
}

static u32 prefix_len(u32 mask)
{
	u32 n = 0;
	while (mask & 0x80000000u) {
		n++;
		mask <<= 1;
	}
	return n;
}

int guest_main(u64 start_info_paddr)
{
	if (!start_info_init(start_info_paddr)) {
		printf("net: bad start_info at 0x%lx\n", start_info_paddr);
		return EXIT_BAD_START_INFO;
	}
	timeout_ms = cmdline_uint("timeout", 10000);
	retry_ms = cmdline_uint("retry", 1000);
	u64 slot = cmdline_uint("slot", ~0ul);
	int rc = virtio_open(&dev, VIRTIO_DEV_NET, slot == ~0ul ? -1 : (int)(slot & 0x7fffffff));
	if (rc)
		return rc;
	if ((rc = virtio_negotiate(&dev, NET_F_MAC)))
		return rc;
	if (!(dev.accepted & NET_F_MAC)) {
		printf("net: device does not offer VIRTIO_NET_F_MAC\n");
		return EXIT_NET_NO_MAC;
	}
	u64 qsize = cmdline_uint("qsize", VQ_MAX_SIZE);
	if (qsize > 0xffff)
		qsize = 0xffff; /* virtio_queue_setup refuses it */
	if ((rc = virtio_queue_setup(&dev, &rxq, 0, (u16)qsize)) || (rc = virtio_queue_setup(&dev, &txq, 1, (u16)qsize)))
		return rc;
	if ((rc = virtio_driver_ok(&dev)))
		return rc;
	for (int i = 0; i < 6; i++)
		mac[i] = virtio_cfg8(&dev, (u32)i);
	print_mac("net: mac ", mac);
	for (u32 i = 0; i < rxq.size; i++)
		rx_post(i);
	virtq_kick(&rxq);

	char a[16], b[16], c[16];
	char arg[24];
	if (cmdline_get("ip", arg, sizeof(arg))) {
		if (!parse_ip(arg, &my_ip) || !my_ip) {
			printf("net: ip=%s is not an address A.B.C.D\n", arg);
			return EXIT_BAD_ARGS;
		}
		if (cmdline_get("router", arg, sizeof(arg)) && !parse_ip(arg, &router_ip)) {
			printf("net: router=%s is not an address A.B.C.D\n", arg);
			return EXIT_BAD_ARGS;
		}
		u64 prefix = cmdline_uint("prefix", 24);
		if (prefix < 1 || prefix > 31) {
			printf("net: prefix=%lu: want 1..31\n", prefix);
			return EXIT_BAD_ARGS;
		}
		netmask = ~0u << (32 - prefix);
		printf("net: static %s/%u router %s\n", ip_str(my_ip, a), prefix_len(netmask), ip_str(router_ip, b));
	} else {
		xid = (u32)rdtsc() ^ (u32)mac[5] << 24;
		if ((rc = dhcp_exchange(DHCP_DISCOVER, DHCP_OFFER, "OFFER")))
			return rc;
		printf("net: offer %s from server %s\n", ip_str(my_ip, a), ip_str(server_ip, b));
		if ((rc = dhcp_exchange(DHCP_REQUEST, DHCP_ACK, "ACK")))
			return rc;
		printf("net: lease %s/%u router %s server %s lease %u s\n", ip_str(my_ip, a), prefix_len(netmask),
		       ip_str(router_ip, b), ip_str(server_ip, c), lease_s);
	}

	u64 port = cmdline_uint("udp", 0);
	u64 flood = cmdline_uint("txflood", 0);
	u64 count = cmdline_uint("rxcount", 0);
	u64 sport = cmdline_uint("sport", 40000);
	u64 fport = cmdline_uint("floodport", 9), rport = cmdline_uint("rxport", 9);
	u64 size = cmdline_uint("size", 64), batch = cmdline_uint("txbatch", 0);
	if (port > 0xffff || sport > 0xffff || fport > 0xffff || rport > 0xffff || size > ETH_MAX || batch > 0xffff) {
		printf("net: udp=%lu sport=%lu floodport=%lu rxport=%lu size=%lu txbatch=%lu out of range\n", port,
		       sport, fport, rport, size, batch);
		return EXIT_BAD_ARGS;
	}
	if (port || flood) {
		if (!router_ip) {
			printf("net: udp= and txflood= need a router (router %s)\n", ip_str(router_ip, a));
			return EXIT_BAD_ARGS;
		}
		if ((rc = arp_router()))
			return rc;
	}
	if (port && (rc = udp_exchange((u16)port, (u16)sport)))
		return rc;
	if (flood && (rc = tx_flood(flood, (u32)size, (u16)sport, (u16)fport, (u32)batch)))
		return rc;
	if (count && (rc = rx_count(count, (u16)rport)))
		return rc;
	printf("net: ok\n");
	return EXIT_OK;
}
