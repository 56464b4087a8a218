package virtionet

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/corral-vmm/corral/dhcp"
)

// Frame fields the tests build and check.
const (
	etherTypeIPv4 = 0x0800
	ipProtoUDP    = 17
)

// testLink is the link the test DHCP server serves: the host (server and
// router) at .1, the guest's reserved address .2.
type testLink struct {
	Host  netip.Prefix
	Guest netip.Addr
}

// testDHCP returns a DHCP server, the device's frame handler, for guestMAC
// on 10.200.7.0/24 with hostMAC as its own.
func testDHCP(t testing.TB) (*dhcp.Server, testLink) {
	t.Helper()
	n := testLink{Host: netip.MustParsePrefix("10.200.7.1/24"), Guest: netip.MustParseAddr("10.200.7.2")}
	srv, err := dhcp.New(dhcp.Config{
		Server: n.Host, ServerMAC: hostMAC[:], Router: n.Host.Addr(),
		PoolFirst: n.Guest, PoolLast: n.Guest,
		AllowedMACs:  []net.HardwareAddr{guestMAC[:]},
		Reservations: []dhcp.Reservation{{MAC: guestMAC[:], IP: n.Guest}},
		NoRateLimit:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv, n
}

// parseReply checks that frame is a DHCP reply from the server to the guest
// and returns it.
func parseReply(t testing.TB, frame []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	if len(frame) < EthHeaderLen+28 || binary.BigEndian.Uint16(frame[12:]) != etherTypeIPv4 {
		t.Fatalf("reply of %d bytes is not IPv4", len(frame))
	}
	if [6]byte(frame[6:12]) != hostMAC {
		t.Fatalf("reply from MAC %x, want the server's", frame[6:12])
	}
	if !udpChecksumOK(t, frame) {
		t.Fatal("reply has a bad UDP checksum")
	}
	m, err := dhcpv4.FromBytes(frame[EthHeaderLen+28:])
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	return m
}

// A DISCOVER from the guest produces an OFFER in the receive ring and
// nothing on the host side; a non-DHCP frame after it reaches the host
// first.
func TestDHCPDiscoverAnsweredNotForwarded(t *testing.T) {
	for _, partial := range []bool{false, true} {
		srv, n := testDHCP(t)
		o := opts{handler: srv}
		if partial {
			o.vnet, o.offloads = true, OffloadCsum
		}
		h := newHarness(t, o)
		h.refill(2, smallBuf)
		var hdr header
		mode := csumFull
		if partial {
			mode = csumPartial // the guest offloads the UDP checksum
		}
		f, start, off := discover(t, mode)
		if partial {
			hdr = header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}
		}
		h.sendTx(hdr, f, 0)
		p := h.takeRx()
		if p.hdr != (header{}) || p.numBuffers != 1 {
			t.Fatalf("reply header %+v num_buffers %d", p.hdr, p.numBuffers)
		}
		m := parseReply(t, p.frame)
		if m.MessageType() != dhcpv4.MessageTypeOffer || !m.YourIPAddr.Equal(net.IP(n.Guest.AsSlice())) {
			t.Fatalf("got %v for %v, want an OFFER of %v", m.MessageType(), m.YourIPAddr, n.Guest)
		}
		if r := m.Router(); len(r) != 1 || !r[0].Equal(net.IP(n.Host.Addr().AsSlice())) {
			t.Fatalf("router %v, want %v", r, n.Host.Addr())
		}
		arp := arpRequest(n.Host.Addr().As4())
		h.sendTx(header{}, arp, 0)
		got := h.peerRead()
		if partial {
			got = got[HeaderLen:]
		}
		if !bytes.Equal(got, arp) {
			t.Fatalf("host side got a %d-byte frame first; want the ARP request (the DISCOVER must not go out)", len(got))
		}
		h.waitTxDone(2)
		c := h.dev.Counters()
		if c.HandlerConsumed != 1 || c.HandlerReplies != 1 || c.TxPackets != 1 || c.RxPackets != 1 {
			t.Fatalf("counters %+v", c)
		}
		if sc := srv.Counters().Map(); sc["offer"] != 1 || sc["drop_udp_checksum"] != 0 {
			t.Fatalf("server counters %v", sc)
		}
	}
}

// The whole handshake: DISCOVER, OFFER, REQUEST, ACK.
func TestDHCPHandshake(t *testing.T) {
	srv, n := testDHCP(t)
	h := newHarness(t, opts{handler: srv})
	h.refill(3, smallBuf)
	f, _, _ := discover(t, csumFull)
	h.sendTx(header{}, f, 0)
	offer := parseReply(t, h.takeRx().frame)
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	f, _, _ = udpFrame(bcastMAC, guestMAC, zeroIP, bcastIP, 68, 67, req.ToBytes(), csumFull)
	h.sendTx(header{}, f, 0)
	ack := parseReply(t, h.takeRx().frame)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IP(n.Guest.AsSlice())) {
		t.Fatalf("got %v for %v", ack.MessageType(), ack.YourIPAddr)
	}
	// RENEWING: unicast from the guest's address to the server's MAC and
	// address (the TAP's, so the host would take it were it not caught).
	renew, err := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithHwAddr(net.HardwareAddr(guestMAC[:])), dhcpv4.WithClientIP(net.IP(n.Guest.AsSlice())))
	if err != nil {
		t.Fatal(err)
	}
	f, _, _ = udpFrame(hostMAC, guestMAC, n.Guest.As4(), n.Host.Addr().As4(), 68, 67, renew.ToBytes(), csumFull)
	h.sendTx(header{}, f, 0)
	ack = parseReply(t, h.takeRx().frame)
	if ack.MessageType() != dhcpv4.MessageTypeAck || [6]byte(ack.ClientHWAddr) != guestMAC {
		t.Fatalf("renewal got %v", ack.MessageType())
	}
	marker := rawFrame(64, 0x42)
	h.sendTx(header{}, marker, 0)
	if got := h.peerRead(); !bytes.Equal(got, marker) {
		t.Fatal("a DHCP frame reached the host")
	}
	if sc := srv.Counters().Map(); sc["request_renewing"] != 1 || sc["ack"] != 2 {
		t.Fatalf("server counters %v", sc)
	}
}

// DHCP frames that are not for the server go on to the host; malformed ones
// to port 67 are dropped; frames that only look like DHCP from afar are not
// the handler's business.
func TestDHCPWhatReachesTheHost(t *testing.T) {
	srv, _ := testDHCP(t)
	h := newHarness(t, opts{handler: srv})
	m, err := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC[:]))
	if err != nil {
		t.Fatal(err)
	}
	payload := m.ToBytes()
	other := [6]byte{0x02, 0, 0, 0, 0, 0x99}
	toOther, _, _ := udpFrame(other, guestMAC, [4]byte{10, 200, 7, 2}, [4]byte{192, 0, 2, 1}, 68, 67, payload, csumFull)
	badCsum, _, _ := udpFrame(bcastMAC, guestMAC, zeroIP, bcastIP, 68, 67, payload, csumWrong)
	dns, _, _ := udpFrame(hostMAC, guestMAC, [4]byte{10, 200, 7, 2}, [4]byte{10, 200, 7, 1}, 5353, 53, payload, csumFull)
	// A later fragment of a datagram to port 67: no UDP header to look at.
	frag := append([]byte(nil), badCsum...)
	binary.BigEndian.PutUint16(frag[EthHeaderLen+6:], 100) // fragment offset 800
	binary.BigEndian.PutUint16(frag[EthHeaderLen+10:], 0)
	binary.BigEndian.PutUint16(frag[EthHeaderLen+10:], ^fold(sum16(frag[EthHeaderLen:EthHeaderLen+20], 0)))
	cases := []struct {
		name    string
		frame   []byte
		forward bool
	}{
		{"DHCP to another server", toOther, true},
		{"DHCP with a bad UDP checksum", badCsum, false},
		{"DNS", dns, true},
		{"later IP fragment", frag, true},
		{"ARP", arpRequest([4]byte{10, 200, 7, 1}), true},
	}
	for _, c := range cases {
		h.sendTx(header{}, c.frame, 0)
	}
	for _, c := range cases {
		if !c.forward {
			continue
		}
		if got := h.peerRead(); !bytes.Equal(got, c.frame) {
			t.Fatalf("host side got a %d-byte frame, want %q's %d bytes", len(got), c.name, len(c.frame))
		}
	}
	h.waitTxDone(len(cases))
	if c := h.dev.Counters(); c.HandlerConsumed != 1 || c.TxPackets != 4 {
		t.Fatalf("counters %+v", c)
	}
	if sc := srv.Counters().Map(); sc["not_dhcp"] != 1 || sc["drop_udp_checksum"] != 1 || sc["frames_in"] != 2 {
		t.Fatalf("server counters %v: want exactly the two port-67 frames offered", sc)
	}
}

// A reply that finds the receive ring empty is dropped and counted; the
// request still does not reach the host.
func TestDHCPReplyDroppedWhenRingEmpty(t *testing.T) {
	srv, _ := testDHCP(t)
	h := newHarness(t, opts{handler: srv})
	f, _, _ := discover(t, csumFull)
	h.sendTx(header{}, f, 0)
	h.waitTxDone(1)
	if c := h.dev.Counters(); c.RxDropReplyNoRoom != 1 || c.HandlerConsumed != 1 || c.RxPackets != 0 {
		t.Fatalf("counters %+v", c)
	}
	// The client retries once the guest has buffers.
	h.refill(1, smallBuf)
	h.sendTx(header{}, f, 0)
	if m := parseReply(t, h.takeRx().frame); m.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("got %v", m.MessageType())
	}
}

// Replies and backend frames share the ring without losing either.
func TestDHCPReplyInterleavesWithBackendFrames(t *testing.T) {
	srv, _ := testDHCP(t)
	h := newHarness(t, opts{handler: srv})
	const frames = 50
	h.refill(frames+1, smallBuf)
	go func() {
		for i := range frames {
			h.peer.Write(rawFrame(100, byte(i)))
		}
	}()
	f, _, _ := discover(t, csumFull)
	h.sendTx(header{}, f, 0)
	var offers, data int
	for range frames + 1 {
		p := h.takeRx()
		if binary.BigEndian.Uint16(p.frame[12:]) == etherTypeIPv4 {
			parseReply(t, p.frame)
			offers++
			continue
		}
		if want := rawFrame(100, byte(data)); !bytes.Equal(p.frame, want) {
			t.Fatalf("backend frame %d wrong", data)
		}
		data++
	}
	if offers != 1 || data != frames {
		t.Fatalf("%d offers, %d frames", offers, data)
	}
}

// The server's Match picks untagged IPv4 UDP to port 67 that has a UDP
// header to look at; tagged frames are for a VLAN it is not on.
func TestDHCPServerMatch(t *testing.T) {
	srv, _ := testDHCP(t)
	f, _, _ := udpFrame(bcastMAC, guestMAC, zeroIP, bcastIP, 68, 67, []byte("x"), csumFull)
	tagged := append(append(append([]byte(nil), f[:12]...), 0x81, 0x00, 0x00, 0x05), f[12:]...)
	mod := func(b []byte, off int, v byte) []byte {
		c := append([]byte(nil), b...)
		c[off] = v
		return c
	}
	ip := EthHeaderLen
	cases := []struct {
		name string
		b    []byte
		want bool
	}{
		{"plain", f, true},
		{"802.1Q", tagged, false},
		{"port 68", mod(f, ip+20+3, 68), false},
		{"TCP", mod(f, ip+9, 6), false},
		{"IPv6 ethertype", mod(f, 12, 0x86), false},
		{"version 6", mod(f, ip, 0x65), false},
		{"IHL 4", mod(f, ip, 0x44), false},
		{"IHL 15 past the end", mod(f, ip, 0x4f), false},
		{"first fragment with MF", mod(f, ip+6, 0x20), true},
		{"later fragment", mod(f, ip+7, 1), false},
		{"cut in the UDP header", f[:ip+20+3], false},
		{"cut in the IP header", f[:ip+19], false},
		{"cut in the tag", tagged[:15], false},
		{"empty", nil, false},
	}
	for _, c := range cases {
		if got := srv.Match(c.b); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}
