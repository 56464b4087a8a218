package dhcp

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func mustAddr(ip net.IP) netip.Addr {
	a, ok := netip.AddrFromSlice(ip.To4())
	if !ok {
		return netip.Addr{}
	}
	return a
}

func TestHandshakeOracle(t *testing.T) {
	s, _ := newTestServer(t, nil)
	c := newClient(t, s, nicMAC)
	v, offer := c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithBroadcast(true)), nil)
	if v != VerdictOffer {
		t.Fatalf("verdict %v", v)
	}
	o := offer.msg
	if o.OpCode != dhcpv4.OpcodeBootReply || o.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("op %v type %v", o.OpCode, o.MessageType())
	}
	if got := mustAddr(o.YourIPAddr); got != netip.MustParseAddr("10.0.2.15") {
		t.Errorf("yiaddr %v, want first pool address", got)
	}
	if o.ClientHWAddr.String() != nicMAC.String() {
		t.Errorf("chaddr %v", o.ClientHWAddr)
	}
	if o.TransactionID != c.msgXID() {
		t.Errorf("xid %v", o.TransactionID)
	}
	if mustAddr(o.ServerIdentifier()) != srvIP {
		t.Errorf("server id %v", o.ServerIdentifier())
	}
	if got := net.IP(o.SubnetMask()).String(); got != "255.255.255.0" {
		t.Errorf("mask %v", got)
	}
	if r := o.Router(); len(r) != 1 || mustAddr(r[0]) != routerIP {
		t.Errorf("router %v", r)
	}
	if d := o.DNS(); len(d) != 2 || mustAddr(d[0]) != dnsIP {
		t.Errorf("dns %v", d)
	}
	if o.DomainName() != "corral.test" {
		t.Errorf("domain %q", o.DomainName())
	}
	if lt := o.IPAddressLeaseTime(0); lt != time.Hour {
		t.Errorf("lease %v", lt)
	}
	if t1, t2 := o.IPAddressRenewalTime(0), o.IPAddressRebindingTime(0); t1 != 30*time.Minute || t2 != 52*time.Minute+30*time.Second {
		t.Errorf("T1 %v T2 %v", t1, t2)
	}
	if b := o.BroadcastAddress(); b.String() != "10.0.2.255" {
		t.Errorf("broadcast %v", b)
	}
	if mtu := o.Options.Get(dhcpv4.OptionInterfaceMTU); len(mtu) != 2 || int(mtu[0])<<8|int(mtu[1]) != 1500 {
		t.Errorf("mtu % x", mtu)
	}
	// Broadcast bit set: the offer is broadcast (RFC 2131 4.1).
	if offer.dstMAC.String() != "ff:ff:ff:ff:ff:ff" || offer.ipDst.String() != "255.255.255.255" || offer.dstPort != 68 || offer.srcPort != 67 {
		t.Errorf("offer to %v %v:%d", offer.dstMAC, offer.ipDst, offer.dstPort)
	}
	if offer.srcMAC.String() != srvMAC.String() || offer.ipSrc != srvIP {
		t.Errorf("offer from %v %v", offer.srcMAC, offer.ipSrc)
	}
	if len(offer.payload) < 300 {
		t.Errorf("payload %d bytes, below BOOTP minimum", len(offer.payload))
	}

	req := c.msg(dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(o.ServerIdentifier())),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(o.YourIPAddr)))
	v, ack := c.send(req, nil)
	if v != VerdictAck || ack.msg.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST verdict %v", v)
	}
	if !ack.msg.YourIPAddr.Equal(o.YourIPAddr) {
		t.Errorf("ack yiaddr %v, offered %v", ack.msg.YourIPAddr, o.YourIPAddr)
	}
	// No broadcast bit, ciaddr zero: unicast to chaddr and yiaddr.
	if ack.dstMAC.String() != nicMAC.String() || !net.IP(ack.ipDst.AsSlice()).Equal(o.YourIPAddr) {
		t.Errorf("ack to %v %v", ack.dstMAC, ack.ipDst)
	}
	cs := s.Counters()
	if cs.Offer != 1 || cs.Ack != 1 || cs.RxDiscover != 1 || cs.RxRequest != 1 || cs.RequestSelecting != 1 || cs.FramesIn != 2 || cs.RepliesOut != 2 {
		t.Errorf("counters %+v", cs)
	}
	if err := s.table.check(); err != nil {
		t.Fatal(err)
	}
	ls := s.Leases()
	if len(ls) != 1 || ls[0].State != "bound" || ls[0].IP != netip.MustParseAddr("10.0.2.15") || ls[0].Remaining != time.Hour {
		t.Errorf("leases %+v", ls)
	}
}

func (c *tclient) msgXID() dhcpv4.TransactionID {
	return dhcpv4.TransactionID{byte(c.xid >> 24), byte(c.xid >> 16), byte(c.xid >> 8), byte(c.xid)}
}
