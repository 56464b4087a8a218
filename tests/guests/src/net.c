/*
 * net: drives the first virtio-net PCI function (or the one at slot=N) with
 * the polled virtio driver in virtio.c: DHCP for an address, then (udp=PORT)
 * one UDP datagram to the router and its answer.
 *
 * Command line (all optional):
 *   slot=N       use the function at bus 0 slot N
 *   udp=PORT     after the lease, send "corral-net hello from A.B.C.D" from
 *                UDP port sport=P (default 40000) to the router's PORT and
 *                wait for a datagram back to sport
 *   timeout=MS   bound of each phase (DHCP, ARP, UDP; default 10000)
 *   retry=MS     DHCP/ARP retransmission interval (default 1000)
 *
 * Output (after the virtio: lines):
 *   net: mac xx:xx:xx:xx:xx:xx
 *   net: offer A.B.C.D from server S
 *   net: lease A.B.C.D/P router R server S lease T s
 *   net: router R is at xx:xx:xx:xx:xx:xx
 *   net: udp reply from R:PORT: <text>
 *   net: ok
 * Frames are built by hand (Ethernet II, IPv4 without options, UDP with a
 * zero checksum, BOOTP/DHCP), broadcast until the lease. ARP requests for
 * the leased address are answered. Exit codes: EXIT_VIRTIO_*, EXIT_NET_*.
 */
#include "virtio.h"

#define NET_F_MAC (1ul << 5)

#define NET_HDR_LEN 12 /* struct virtio_net_hdr_v1 */
#define RX_BUFS 8
#define BUF_SIZE 2048
#define ETH_MIN 60
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

static struct virtio_pci dev;
static struct virtq rxq, txq;
static u8 rx_bufs[RX_BUFS][BUF_SIZE] __attribute__((aligned(4096)));
static u8 tx_buf[BUF_SIZE] __attribute__((aligned(64)));
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

/* Ethernet + IPv4 + UDP headers in front of n payload bytes already at
 * tx_buf + NET_HDR_LEN + 42. Returns the frame length. */
static u32 build_udp(const u8 *dst_mac, u32 src, u32 dst, u16 sport, u16 dport, u32 n)
{
	u8 *f = tx_buf + NET_HDR_LEN;
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
	if (id >= RX_BUFS || ulen > BUF_SIZE) {
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

/* Sends DHCP type and waits for a reply of want (or NAK), resending every
 * retry_ms until timeout_ms. */
static int dhcp_exchange(u8 type, int want, const char *phase)
{
	u64 per_ms = tsc_ticks_per_ms();
	u64 end = rdtsc() + timeout_ms * per_ms;
	for (int attempt = 0;; attempt++) {
		int rc = send_dhcp(type);
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
			u32 yiaddr = 0;
			int got = handle_arp(f, len, &arc) ? 0 : dhcp_reply(f, len, &yiaddr);
			rx_done(slot);
			if (arc)
				return arc;
			if (got == DHCP_NAK) {
				printf("net: DHCP NAK in %s\n", phase);
				return EXIT_NET_DHCP_NAK;
			}
			if (got == want) {
				my_ip = yiaddr;
				return 0;
			}
		}
		if (rdtsc() >= end) {
			printf("net: no DHCP %s within %lu ms (%d sent)\n", phase, timeout_ms, attempt + 1);
			return EXIT_NET_DHCP_TIMEOUT;
		}
	}
}

static int arp_router(void)
{
	char ip[16];
	u64 per_ms = tsc_ticks_per_ms();
	u64 end = rdtsc() + timeout_ms * per_ms;
	static const u8 zero[6];
	for (int attempt = 0;; attempt++) {
		int rc = send_arp(ARP_REQUEST, zero, router_ip);
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
			int reply = is_arp && get16(f + ETH_HLEN + 6) == ARP_REPLY &&
				    get32(f + ETH_HLEN + 14) == router_ip;
			rx_done(slot);
			if (arc)
				return arc;
			if (reply) {
				printf("net: router %s is at ", ip_str(router_ip, ip));
				print_mac("", router_mac);
				return 0;
			}
		}
		if (rdtsc() >= end) {
			printf("net: router %s did not answer ARP within %lu ms (%d sent)\n", ip_str(router_ip, ip),
			       timeout_ms, attempt + 1);
			return EXIT_NET_ARP_TIMEOUT;
		}
	}
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
	if ((rc = virtio_queue_setup(&dev, &rxq, 0, 16)) || (rc = virtio_queue_setup(&dev, &txq, 1, 16)))
		return rc;
	if ((rc = virtio_driver_ok(&dev)))
		return rc;
	for (int i = 0; i < 6; i++)
		mac[i] = virtio_cfg8(&dev, (u32)i);
	print_mac("net: mac ", mac);
	for (u32 i = 0; i < RX_BUFS; i++)
		rx_post(i);
	virtq_kick(&rxq);

	xid = (u32)rdtsc() ^ (u32)mac[5] << 24;
	if ((rc = dhcp_exchange(DHCP_DISCOVER, DHCP_OFFER, "OFFER")))
		return rc;
	char a[16], b[16], c[16];
	printf("net: offer %s from server %s\n", ip_str(my_ip, a), ip_str(server_ip, b));
	if ((rc = dhcp_exchange(DHCP_REQUEST, DHCP_ACK, "ACK")))
		return rc;
	printf("net: lease %s/%u router %s server %s lease %u s\n", ip_str(my_ip, a), prefix_len(netmask),
	       ip_str(router_ip, b), ip_str(server_ip, c), lease_s);

	u64 port = cmdline_uint("udp", 0);
	if (port) {
		if (port > 0xffff || !router_ip) {
			printf("net: udp=%lu needs a port and a router (router %s)\n", port, ip_str(router_ip, a));
			return EXIT_BAD_ARGS;
		}
		if ((rc = arp_router()))
			return rc;
		if ((rc = udp_exchange((u16)port, (u16)cmdline_uint("sport", 40000))))
			return rc;
	}
	printf("net: ok\n");
	return EXIT_OK;
}
