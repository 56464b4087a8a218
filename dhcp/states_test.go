package dhcp

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func ipOpt(code dhcpv4.OptionCode, a string) dhcpv4.Modifier {
	return dhcpv4.WithGeneric(code, netip.MustParseAddr(a).AsSlice())
}

func sidOpt() dhcpv4.Modifier { return ipOpt(dhcpv4.OptionServerIdentifier, "10.0.2.2") }

func reqIPOpt(a string) dhcpv4.Modifier { return ipOpt(dhcpv4.OptionRequestedIPAddress, a) }

func ciaddr(a string) dhcpv4.Modifier { return dhcpv4.WithClientIP(net.ParseIP(a)) }

// unicastToServer sends a frame the way a RENEWING client does: from its
// address to the server's MAC and IP.
func unicastToServer(from string) func(*testFrame) {
	return func(f *testFrame) {
		f.dst, f.ipDst, f.ipSrc = srvMAC, srvIP, netip.MustParseAddr(from)
	}
}

func TestRequestStates(t *testing.T) {
	type step struct {
		mt    dhcpv4.MessageType
		mods  []dhcpv4.Modifier
		frame func(*testFrame)
		want  Verdict
		yi    string // expected yiaddr for replies
	}
	tests := []struct {
		name    string
		steps   []step
		counter counterID
	}{
		{"selecting ACK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
		}, cRequestSelecting},
		{"selecting wrong address NAK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.16")}, nil, VerdictNak, "0.0.0.0"},
		}, cRequestSelecting},
		{"selecting without requested IP", []step{
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt()}, nil, DropBadRequest, ""},
		}, cRequestSelecting},
		{"selecting another server", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ipOpt(dhcpv4.OptionServerIdentifier, "10.0.2.9"), reqIPOpt("10.0.2.99")}, nil, VerdictOtherServer, ""},
		}, cRxRequest},
		{"init-reboot known address ACK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
		}, cRequestInitReboot},
		{"init-reboot no record, free pool address ignored", []step{
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.20")}, nil, VerdictUnknownClient, ""},
		}, cRequestInitReboot},
		{"init-reboot other subnet NAK", []step{
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("192.168.1.20")}, nil, VerdictNak, "0.0.0.0"},
		}, cRequestInitReboot},
		{"init-reboot outside pool, no record, ignored", []step{
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.100")}, nil, VerdictUnknownClient, ""},
		}, cRequestInitReboot},
		{"init-reboot server address, known client, NAK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.2")}, nil, VerdictNak, "0.0.0.0"},
		}, cRequestInitReboot},
		{"init-reboot without requested IP", []step{
			{dhcpv4.MessageTypeRequest, nil, nil, DropBadRequest, ""},
		}, cRequestInitReboot},
		{"renewing ACK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.15")}, unicastToServer("10.0.2.15"), VerdictAck, "10.0.2.15"},
		}, cRequestRenewing},
		{"renewing wrong address NAK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.16")}, unicastToServer("10.0.2.16"), VerdictNak, "0.0.0.0"},
		}, cRequestRenewing},
		{"rebinding ACK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
		}, cRequestRebinding},
		{"rebinding to subnet broadcast ACK", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.15")}, func(f *testFrame) { f.ipDst = netip.MustParseAddr("10.0.2.255") }, VerdictAck, "10.0.2.15"},
		}, cRequestRebinding},
		{"decline quarantines, next DISCOVER gets another address", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
			{dhcpv4.MessageTypeDecline, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictDecline, ""},
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.16"},
		}, cRxDecline},
		{"decline of an address not leased", []step{
			{dhcpv4.MessageTypeDecline, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, DropNotLeased, ""},
		}, cRxDecline},
		{"decline without server id", []step{
			{dhcpv4.MessageTypeDecline, []dhcpv4.Modifier{reqIPOpt("10.0.2.15")}, nil, DropBadRequest, ""},
		}, cRxDecline},
		{"decline for another server", []step{
			{dhcpv4.MessageTypeDecline, []dhcpv4.Modifier{ipOpt(dhcpv4.OptionServerIdentifier, "10.0.2.9"), reqIPOpt("10.0.2.15")}, nil, VerdictOtherServer, ""},
		}, cRxDecline},
		{"release then DISCOVER gets the same address back", []step{
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
			{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil, VerdictAck, "10.0.2.15"},
			{dhcpv4.MessageTypeRelease, []dhcpv4.Modifier{sidOpt(), ciaddr("10.0.2.15")}, unicastToServer("10.0.2.15"), VerdictRelease, ""},
			{dhcpv4.MessageTypeRelease, []dhcpv4.Modifier{sidOpt(), ciaddr("10.0.2.15")}, unicastToServer("10.0.2.15"), DropNotLeased, ""},
			{dhcpv4.MessageTypeDiscover, nil, nil, VerdictOffer, "10.0.2.15"},
		}, cRxRelease},
		{"release without ciaddr", []step{
			{dhcpv4.MessageTypeRelease, []dhcpv4.Modifier{sidOpt()}, nil, DropBadRequest, ""},
		}, cRxRelease},
		{"inform", []step{
			{dhcpv4.MessageTypeInform, []dhcpv4.Modifier{ciaddr("10.0.2.77")}, unicastToServer("10.0.2.77"), VerdictAck, "0.0.0.0"},
		}, cRxInform},
		{"inform without ciaddr", []step{
			{dhcpv4.MessageTypeInform, nil, nil, DropBadRequest, ""},
		}, cRxInform},
		{"DISCOVER with requested address", []step{
			{dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{reqIPOpt("10.0.2.25")}, nil, VerdictOffer, "10.0.2.25"},
		}, cRxDiscover},
		{"DISCOVER with requested address outside pool", []step{
			{dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{reqIPOpt("10.0.2.200")}, nil, VerdictOffer, "10.0.2.15"},
		}, cRxDiscover},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, nil)
			c := newClient(t, s, nicMAC)
			for i, st := range tc.steps {
				v, r := c.send(c.msg(st.mt, st.mods...), st.frame)
				if v != st.want {
					t.Fatalf("step %d (%v): verdict %v, want %v", i, st.mt, v, st.want)
				}
				if r != nil && r.msg.YourIPAddr.String() != st.yi {
					t.Fatalf("step %d: yiaddr %v, want %v", i, r.msg.YourIPAddr, st.yi)
				}
				if r != nil && r.msg.TransactionID != c.msgXID() {
					t.Fatalf("step %d: xid not echoed", i)
				}
				if v == VerdictNak {
					if lt := r.msg.Options.Get(dhcpv4.OptionIPAddressLeaseTime); lt != nil {
						t.Errorf("NAK carries a lease time")
					}
					if r.ipDst.String() != "255.255.255.255" {
						t.Errorf("NAK to %v, want broadcast", r.ipDst)
					}
				}
				if err := s.table.check(); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
			}
			if s.counts[tc.counter] == 0 {
				t.Errorf("counter %s not incremented", counterNames[tc.counter])
			}
		})
	}
}

func TestInformReply(t *testing.T) {
	s, _ := newTestServer(t, nil)
	c := newClient(t, s, nicMAC)
	v, r := c.send(c.msg(dhcpv4.MessageTypeInform, ciaddr("10.0.2.77")), unicastToServer("10.0.2.77"))
	if v != VerdictAck {
		t.Fatal(v)
	}
	if r.msg.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || r.msg.Options.Has(dhcpv4.OptionRenewTimeValue) {
		t.Error("ACK to INFORM must not carry lease times (RFC 2131 4.3.5)")
	}
	if r.ipDst.String() != "10.0.2.77" || r.dstMAC.String() != nicMAC.String() || r.msg.ClientIPAddr.String() != "10.0.2.77" {
		t.Errorf("INFORM reply to %v %v ciaddr %v", r.dstMAC, r.ipDst, r.msg.ClientIPAddr)
	}
	if len(r.msg.DNS()) != 2 || net.IP(r.msg.SubnetMask()).String() != "255.255.255.0" {
		t.Error("INFORM reply lacks configuration")
	}
	if len(s.Leases()) != 0 {
		t.Error("INFORM created a lease")
	}
}

// RFC 2131 section 4.1: giaddr, then ciaddr, then the broadcast bit decide
// where a reply goes; a NAK is broadcast unless relayed.
func TestReplyAddressing(t *testing.T) {
	bcast := "ff:ff:ff:ff:ff:ff/255.255.255.255:68"
	tests := []struct {
		name  string
		mt    dhcpv4.MessageType
		mods  []dhcpv4.Modifier
		fr    func(*testFrame)
		want  string // dstMAC/dstIP:port
		bflag bool
		auth  bool // Config.Authoritative
		bound bool // the client holds 10.0.2.15 first
	}{
		{"offer, broadcast bit", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{dhcpv4.WithBroadcast(true)}, nil, bcast, true, false, false},
		{"offer, no broadcast bit", dhcpv4.MessageTypeDiscover, nil, nil, nicMAC.String() + "/10.0.2.15:68", false, false, false},
		{"offer, ciaddr set", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{ciaddr("10.0.2.40"), dhcpv4.WithBroadcast(true)}, nil, nicMAC.String() + "/10.0.2.40:68", true, false, false},
		{"offer, relayed", dhcpv4.MessageTypeDiscover, []dhcpv4.Modifier{dhcpv4.WithGatewayIP(net.ParseIP("10.0.2.9")), dhcpv4.WithBroadcast(true)}, func(f *testFrame) { f.srcPort = 67 }, nicMAC.String() + "/10.0.2.9:67", true, false, false},
		{"NAK, unicast asked", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("192.168.1.100")}, nil, bcast, false, false, false},
		{"NAK, ciaddr set", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.100")}, unicastToServer("10.0.2.100"), bcast, false, true, false},
		{"NAK, ciaddr set, known client", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.100")}, unicastToServer("10.0.2.100"), bcast, false, false, true},
		{"NAK, relayed sets broadcast bit", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.100"), dhcpv4.WithGatewayIP(net.ParseIP("10.0.2.9"))}, func(f *testFrame) { f.srcPort = 67 }, nicMAC.String() + "/10.0.2.9:67", true, true, false},
		{"ACK, renewing", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.15")}, unicastToServer("10.0.2.15"), nicMAC.String() + "/10.0.2.15:68", false, false, true},
		{"ACK, rebinding with broadcast bit", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr("10.0.2.15"), dhcpv4.WithBroadcast(true)}, nil, nicMAC.String() + "/10.0.2.15:68", true, false, true},
		{"ACK, init-reboot, no broadcast bit", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.15")}, nil, nicMAC.String() + "/10.0.2.15:68", false, false, true},
		{"ACK, init-reboot, broadcast bit", dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt("10.0.2.15"), dhcpv4.WithBroadcast(true)}, nil, bcast, true, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, func(c *Config) { c.Authoritative = tc.auth })
			c := newClient(t, s, nicMAC)
			if tc.bound {
				c.handshake()
			}
			v, r := c.send(c.msg(tc.mt, tc.mods...), tc.fr)
			if r == nil {
				t.Fatalf("no reply: %v", v)
			}
			got := r.dstMAC.String() + "/" + r.ipDst.String() + ":" + strconv.Itoa(int(r.dstPort))
			if got != tc.want {
				t.Errorf("reply to %s, want %s", got, tc.want)
			}
			if r.msg.IsBroadcast() != tc.bflag {
				t.Errorf("broadcast flag %v, want %v", r.msg.IsBroadcast(), tc.bflag)
			}
			if r.srcPort != 67 || r.ipSrc != srvIP {
				t.Errorf("from %v:%d", r.ipSrc, r.srcPort)
			}
		})
	}
}

func TestRelay(t *testing.T) {
	s, _ := newTestServer(t, nil)
	c := newClient(t, s, nicMAC)
	v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.ParseIP("192.168.7.1"))), func(f *testFrame) { f.srcPort = 67 })
	if v != DropRelay {
		t.Errorf("relay from another subnet: %v", v)
	}
	v, _ = c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithGatewayIP(net.ParseIP("10.0.2.9"))), nil)
	if v != DropUDPSrcPort {
		t.Errorf("relayed message from port 68: %v", v)
	}
}

func TestReservation(t *testing.T) {
	other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}
	s, _ := newTestServer(t, func(c *Config) {
		c.Reservations = []Reservation{{MAC: nicMAC, IP: netip.MustParseAddr("10.0.2.20"), Hostname: "web"}}
		c.AllowedMACs = append(c.AllowedMACs, other)
	})
	c := newClient(t, s, nicMAC)
	ack := c.handshake()
	if ack.msg.YourIPAddr.String() != "10.0.2.20" || ack.msg.HostName() != "web" {
		t.Fatalf("reserved client got %v host %q", ack.msg.YourIPAddr, ack.msg.HostName())
	}
	// The reserved address is in the pool but never handed to others.
	o := newClient(t, s, other)
	v, r := o.send(o.msg(dhcpv4.MessageTypeDiscover, reqIPOpt("10.0.2.20")), nil)
	if v != VerdictOffer || r.msg.YourIPAddr.String() == "10.0.2.20" || r.msg.HostName() != "" {
		t.Fatalf("other client offered %v host %q", r.msg.YourIPAddr, r.msg.HostName())
	}
	v, _ = o.send(o.msg(dhcpv4.MessageTypeRequest, reqIPOpt("10.0.2.20")), nil)
	if v != VerdictNak {
		t.Errorf("other client INIT-REBOOT for reserved address: %v", v)
	}
	// The reserved client is NAKed for any other address, and can release.
	v, _ = c.send(c.msg(dhcpv4.MessageTypeRequest, reqIPOpt("10.0.2.21")), nil)
	if v != VerdictNak {
		t.Errorf("reserved client asking for another address: %v", v)
	}
	v, _ = c.send(c.msg(dhcpv4.MessageTypeRelease, sidOpt(), ciaddr("10.0.2.20")), unicastToServer("10.0.2.20"))
	if v != VerdictRelease {
		t.Errorf("release: %v", v)
	}
	if len(s.Leases()) != 1 {
		t.Errorf("leases %+v: reservations keep no records", s.Leases())
	}
}

func TestClientIdentity(t *testing.T) {
	s, _ := newTestServer(t, nil)
	c := newClient(t, s, nicMAC)
	idA := dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte{0, 'a'})
	idB := dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte{0, 'b'})
	a := c.handshake(idA)
	b := c.handshake(idB)
	if a.msg.YourIPAddr.Equal(b.msg.YourIPAddr) {
		t.Fatalf("two client ids on one MAC share %v", a.msg.YourIPAddr)
	}
	if got := a.msg.Options.Get(dhcpv4.OptionClientIdentifier); string(got) != "\x00a" {
		t.Errorf("client id echo %q (RFC 6842)", got)
	}
	// Without option 61 the MAC is the identity: a third, distinct lease.
	n := c.handshake()
	if n.msg.YourIPAddr.Equal(a.msg.YourIPAddr) || n.msg.YourIPAddr.Equal(b.msg.YourIPAddr) {
		t.Fatalf("chaddr identity shares an address")
	}
	// Same id again: same address.
	if again := c.handshake(idA); !again.msg.YourIPAddr.Equal(a.msg.YourIPAddr) {
		t.Errorf("client id a moved from %v to %v", a.msg.YourIPAddr, again.msg.YourIPAddr)
	}
}

func TestMACRestriction(t *testing.T) {
	s, _ := newTestServer(t, nil)
	stranger := net.HardwareAddr{0x52, 0x54, 0, 0xde, 0xad, 0x01}
	c := newClient(t, s, stranger)
	if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != DropMACNotAllowed {
		t.Errorf("foreign chaddr and source: %v", v)
	}
	c.src = nicMAC // the guest's own NIC asking for another MAC
	if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != DropMACNotAllowed {
		t.Errorf("foreign chaddr from own NIC: %v", v)
	}
	c = newClient(t, s, nicMAC)
	c.src = stranger
	if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != DropMACNotAllowed {
		t.Errorf("own chaddr from a foreign source MAC: %v", v)
	}
	any, _ := newTestServer(t, func(c *Config) { c.AllowAnyMAC = true })
	c = newClient(t, any, stranger)
	if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != VerdictOffer {
		t.Errorf("AllowAnyMAC: %v", v)
	}
}

func TestOfferExpiresAndAddressMoves(t *testing.T) {
	s, clk := newTestServer(t, func(c *Config) {
		c.PoolLast = netip.MustParseAddr("10.0.2.15") // one address
		c.AllowAnyMAC = true
	})
	a := newClient(t, s, net.HardwareAddr{2, 0, 0, 0, 0, 0xa})
	b := newClient(t, s, net.HardwareAddr{2, 0, 0, 0, 0, 0xb})
	a.handshake()
	if v, _ := b.send(b.msg(dhcpv4.MessageTypeDiscover), nil); v != DropPoolExhausted {
		t.Fatalf("pool of one, leased: %v", v)
	}
	clk.t += time.Hour + time.Second // a's lease expires
	if v, r := b.send(b.msg(dhcpv4.MessageTypeDiscover), nil); v != VerdictOffer || r.msg.YourIPAddr.String() != "10.0.2.15" {
		t.Fatalf("after expiry: %v", v)
	}
	// a comes back and renews: its record is gone, the address is offered to
	// b. a is unknown now: no reply (RFC 2131 4.3.2), certainly no ACK.
	if v, _ := a.send(a.msg(dhcpv4.MessageTypeRequest, ciaddr("10.0.2.15")), unicastToServer("10.0.2.15")); v != VerdictUnknownClient {
		t.Fatalf("renewing an address now offered to another: %v", v)
	}
	if err := s.table.check(); err != nil {
		t.Fatal(err)
	}
}

// A DISCOVER flood holds offers only: a client that goes on to REQUEST can
// still get an address from a full pool by taking back the oldest offer.
func TestOfferFloodDoesNotStarve(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) {
		c.AllowAnyMAC = true
		c.NoRateLimit = true
	})
	for i := 0; i < 100; i++ {
		f := newClient(t, s, net.HardwareAddr{2, 0, 0, 1, byte(i >> 8), byte(i)})
		if v, _ := f.send(f.msg(dhcpv4.MessageTypeDiscover), nil); v != VerdictOffer {
			t.Fatalf("flood %d: %v", i, v)
		}
	}
	good := newClient(t, s, net.HardwareAddr{2, 0, 0, 2, 0, 1})
	good.handshake()
	if err := s.table.check(); err != nil {
		t.Fatal(err)
	}
}
