package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Test network: server 10.0.2.2/24, pool .15-.30, guest NIC nicMAC.
var (
	nicMAC   = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	srvMAC   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	srvIP    = netip.MustParseAddr("10.0.2.2")
	routerIP = netip.MustParseAddr("10.0.2.1")
	dnsIP    = netip.MustParseAddr("10.0.2.3")
)

// fakeClock is a settable Clock.
type fakeClock struct{ t time.Duration }

func (c *fakeClock) Now() time.Duration { return c.t }

func testConfig(clk Clock) Config {
	return Config{
		Server:      netip.MustParsePrefix("10.0.2.2/24"),
		ServerMAC:   srvMAC,
		PoolFirst:   netip.MustParseAddr("10.0.2.15"),
		PoolLast:    netip.MustParseAddr("10.0.2.30"),
		Router:      routerIP,
		DNS:         []netip.Addr{dnsIP, netip.MustParseAddr("10.0.2.4")},
		Domain:      "corral.test",
		LeaseTime:   time.Hour,
		AllowedMACs: []net.HardwareAddr{nicMAC},
		Clock:       clk,
	}
}

func newTestServer(t testing.TB, mod func(*Config)) (*Server, *fakeClock) {
	t.Helper()
	clk := &fakeClock{t: time.Second}
	cfg := testConfig(clk)
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s, clk
}

// naiveChecksum is the RFC 1071 checksum computed the slow, obvious way, to
// check the server's faster implementation independently.
func naiveChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var sum uint32
	for i := 0; i < len(all); i += 2 {
		sum += uint32(all[i])<<8 | uint32(all[i+1])
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// testFrame describes a client frame; bytes() lays it out with correct
// checksums unless told otherwise.
type testFrame struct {
	dst, src       net.HardwareAddr
	vlan           bool
	tci            uint16
	ipSrc, ipDst   netip.Addr
	srcPort        uint16
	dstPort        uint16
	payload        []byte
	noUDPChecksum  bool
	badUDPChecksum bool
}

func clientFrame(payload []byte) testFrame {
	return testFrame{
		dst: net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, src: nicMAC,
		ipSrc: netip.IPv4Unspecified(), ipDst: netip.AddrFrom4([4]byte{255, 255, 255, 255}),
		srcPort: 68, dstPort: 67, payload: payload,
	}
}

func (f testFrame) bytes() []byte {
	var b []byte
	b = append(b, f.dst...)
	b = append(b, f.src...)
	if f.vlan {
		b = binary.BigEndian.AppendUint16(b, 0x8100)
		b = binary.BigEndian.AppendUint16(b, f.tci)
	}
	b = binary.BigEndian.AppendUint16(b, 0x0800)
	udpLen := 8 + len(f.payload)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+udpLen))
	ip[8] = 64
	ip[9] = 17
	s4, d4 := f.ipSrc.As4(), f.ipDst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], naiveChecksum(ip))
	udp := make([]byte, 8, udpLen)
	binary.BigEndian.PutUint16(udp[0:], f.srcPort)
	binary.BigEndian.PutUint16(udp[2:], f.dstPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	udp = append(udp, f.payload...)
	if !f.noUDPChecksum {
		pseudo := append(append(append([]byte{}, s4[:]...), d4[:]...), 0, 17, byte(udpLen>>8), byte(udpLen))
		cs := naiveChecksum(pseudo, udp)
		if cs == 0 {
			cs = 0xffff
		}
		if f.badUDPChecksum {
			cs ^= 0x0101
		}
		binary.BigEndian.PutUint16(udp[6:], cs)
	}
	b = append(b, ip...)
	return append(b, udp...)
}

// parsedReply is a reply frame taken apart by the test's own parser, with
// the DHCP payload decoded by the independent insomniacslk/dhcp decoder.
type parsedReply struct {
	dstMAC, srcMAC net.HardwareAddr
	vlan           bool
	tci            uint16
	ipSrc, ipDst   netip.Addr
	srcPort        uint16
	dstPort        uint16
	payload        []byte
	msg            *dhcpv4.DHCPv4
}

// parseReply checks every header of a reply frame and decodes it.
func parseReply(b []byte) (*parsedReply, error) {
	r := &parsedReply{}
	if len(b) < 14 {
		return nil, fmt.Errorf("reply of %d bytes", len(b))
	}
	r.dstMAC, r.srcMAC = net.HardwareAddr(b[0:6]), net.HardwareAddr(b[6:12])
	et := binary.BigEndian.Uint16(b[12:])
	b = b[14:]
	if et == 0x8100 {
		r.vlan, r.tci = true, binary.BigEndian.Uint16(b)
		et = binary.BigEndian.Uint16(b[2:])
		b = b[4:]
	}
	if et != 0x0800 {
		return nil, fmt.Errorf("ethertype %#x", et)
	}
	if len(b) < 28 || b[0] != 0x45 {
		return nil, fmt.Errorf("bad IPv4 header % x", b[:min(len(b), 20)])
	}
	if naiveChecksum(b[:20]) != 0 {
		return nil, fmt.Errorf("IPv4 header checksum wrong")
	}
	if total := int(binary.BigEndian.Uint16(b[2:])); total != len(b) {
		return nil, fmt.Errorf("IPv4 total length %d, frame has %d", total, len(b))
	}
	if b[9] != 17 || binary.BigEndian.Uint16(b[6:])&0x3fff != 0 {
		return nil, fmt.Errorf("not an unfragmented UDP datagram")
	}
	r.ipSrc = netip.AddrFrom4([4]byte(b[12:16]))
	r.ipDst = netip.AddrFrom4([4]byte(b[16:20]))
	udp := b[20:]
	if int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		return nil, fmt.Errorf("UDP length %d, datagram has %d", binary.BigEndian.Uint16(udp[4:]), len(udp))
	}
	pseudo := append(append([]byte{}, b[12:20]...), 0, 17, byte(len(udp)>>8), byte(len(udp)))
	if binary.BigEndian.Uint16(udp[6:]) == 0 || naiveChecksum(pseudo, udp) != 0 {
		return nil, fmt.Errorf("UDP checksum missing or wrong")
	}
	r.srcPort, r.dstPort = binary.BigEndian.Uint16(udp[0:]), binary.BigEndian.Uint16(udp[2:])
	r.payload = udp[8:]
	m, err := dhcpv4.FromBytes(r.payload)
	if err != nil {
		return nil, fmt.Errorf("oracle decoder: %w", err)
	}
	r.msg = m
	return r, nil
}

// tclient drives a server with messages built by insomniacslk/dhcp.
type tclient struct {
	t   testing.TB
	s   *Server
	mac net.HardwareAddr
	src net.HardwareAddr // Ethernet source; defaults to mac
	xid uint32
	out []byte
}

func newClient(t testing.TB, s *Server, mac net.HardwareAddr) *tclient {
	return &tclient{t: t, s: s, mac: mac, xid: 0x1000, out: make([]byte, s.ReplyBufferSize())}
}

// msg builds a client message of type mt.
func (c *tclient) msg(mt dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	c.t.Helper()
	c.xid++
	all := append([]dhcpv4.Modifier{
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{byte(c.xid >> 24), byte(c.xid >> 16), byte(c.xid >> 8), byte(c.xid)}),
		dhcpv4.WithHwAddr(c.mac),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer),
	}, mods...)
	m, err := dhcpv4.New(all...)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// send delivers m in a broadcast frame (or per fr) and returns the verdict
// and the parsed reply (nil when there is none).
func (c *tclient) send(m *dhcpv4.DHCPv4, fr func(*testFrame)) (Verdict, *parsedReply) {
	c.t.Helper()
	f := clientFrame(m.ToBytes())
	if c.src != nil {
		f.src = c.src
	} else {
		f.src = c.mac
	}
	if fr != nil {
		fr(&f)
	}
	return c.sendFrame(f.bytes())
}

func (c *tclient) sendFrame(frame []byte) (Verdict, *parsedReply) {
	c.t.Helper()
	out, v := c.s.HandleFrame(frame, c.out)
	if v.HasReply() != (out != nil) {
		c.t.Fatalf("verdict %v but reply %v", v, out != nil)
	}
	if out == nil {
		return v, nil
	}
	r, err := parseReply(out)
	if err != nil {
		c.t.Fatalf("verdict %v: malformed reply: %v\n% x", v, err, out)
	}
	return v, r
}

// handshake runs DISCOVER and REQUEST and returns the ACK.
func (c *tclient) handshake(mods ...dhcpv4.Modifier) *parsedReply {
	c.t.Helper()
	v, offer := c.send(c.msg(dhcpv4.MessageTypeDiscover, mods...), nil)
	if v != VerdictOffer {
		c.t.Fatalf("DISCOVER: verdict %v", v)
	}
	req := c.msg(dhcpv4.MessageTypeRequest, append([]dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.msg.ServerIdentifier())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.msg.YourIPAddr)),
	}, mods...)...)
	v, ack := c.send(req, nil)
	if v != VerdictAck {
		c.t.Fatalf("REQUEST: verdict %v", v)
	}
	return ack
}

// rawMessage builds a BOOTREQUEST by hand: fixed header from the arguments,
// then the magic cookie and opts verbatim (opts must carry their own END).
func rawMessage(op, htype, hlen byte, chaddr net.HardwareAddr, opts []byte) []byte {
	b := make([]byte, 240, 240+len(opts)+64)
	b[0], b[1], b[2] = op, htype, hlen
	binary.BigEndian.PutUint32(b[4:], 0xcafe0001)
	copy(b[28:44], chaddr)
	binary.BigEndian.PutUint32(b[236:], 0x63825363)
	b = append(b, opts...)
	for len(b) < 300 {
		b = append(b, 0)
	}
	return b
}

// discoverOpts is a minimal valid DISCOVER option list.
func discoverOpts(extra ...byte) []byte {
	o := []byte{53, 1, 1}
	o = append(o, extra...)
	return append(o, 255)
}
