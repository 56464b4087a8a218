package dhcp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// extendIPDatagram appends extra bytes inside the IPv4 datagram of an
// untagged frame, after the UDP datagram (whose length field is unchanged),
// and fixes the total length and header checksum.
func extendIPDatagram(b, extra []byte) []byte {
	b = append(append([]byte{}, b...), extra...)
	binary.BigEndian.PutUint16(b[16:], binary.BigEndian.Uint16(b[16:])+uint16(len(extra)))
	fixIPChecksum(b)
	return b
}

// Lengths come from the IPv4 total length and the UDP length, never from the
// frame: Ethernet padding and NIC trailers after the datagram, and bytes
// inside the datagram after the UDP length, are not part of the message.
func TestLengthsFromHeadersNotFrame(t *testing.T) {
	discover := validDiscoverFrame().bytes()
	// A DISCOVER whose END byte lies just past the UDP length.
	noEnd := rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 1})[:243]
	noEndFrame := clientFrame(noEnd).bytes()
	tests := []struct {
		name  string
		frame []byte
		want  Verdict
	}{
		{"4-byte trailer after the datagram", append(append([]byte{}, discover...), 0xde, 0xad, 0xbe, 0xef), VerdictOffer},
		{"100-byte trailer after the datagram", append(append([]byte{}, discover...), bytes.Repeat([]byte{0xff}, 100)...), VerdictOffer},
		{"trailer on a tagless frame without UDP checksum", func() []byte {
			f := validDiscoverFrame()
			f.noUDPChecksum = true
			return append(f.bytes(), 1, 2, 3)
		}(), VerdictOffer},
		{"IPv4 datagram longer than the UDP length", extendIPDatagram(discover, []byte{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11}), VerdictOffer},
		{"odd UDP length inside an even IP datagram", extendIPDatagram(clientFrame(append(rawMessage(1, 1, 6, nicMAC, discoverOpts()), 0)).bytes(), []byte{0x99}), VerdictOffer},
		{"UDP length excludes END (bytes after it are not options)", extendIPDatagram(noEndFrame, []byte{255, 0, 0, 0}), DropOptionMissingEnd},
		{"UDP length excludes END, also in the Ethernet trailer", append(append([]byte{}, noEndFrame...), 255, 0, 0, 0), DropOptionMissingEnd},
		{"checksum over the IP payload instead of the UDP length", func() []byte {
			b := extendIPDatagram(discover, []byte{0, 1})
			// Recompute the UDP checksum as if the UDP datagram ran to the
			// end of the IP payload: wrong for the real UDP length.
			udp := b[34:]
			binary.BigEndian.PutUint16(udp[6:], 0)
			binary.BigEndian.PutUint16(udp[6:], naiveChecksum(append(append([]byte{}, b[26:34]...), 0, 17, byte(len(udp)>>8), byte(len(udp))), udp))
			return b
		}(), DropUDPChecksum},
		{"UDP length past the IP payload", func() []byte {
			b := append(append([]byte{}, discover...), 0, 0)
			binary.BigEndian.PutUint16(b[38:], binary.BigEndian.Uint16(b[38:])+2)
			return b
		}(), DropUDPLength},
		{"UDP length below the header", func() []byte {
			b := append([]byte{}, discover...)
			binary.BigEndian.PutUint16(b[38:], 7)
			return b
		}(), DropUDPLength},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, nil)
			c := newClient(t, s, nicMAC)
			in := append([]byte{}, tc.frame...)
			v, r := c.sendFrame(tc.frame)
			if v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			if !bytes.Equal(in, tc.frame) {
				t.Fatal("frame modified")
			}
			if r != nil && r.msg.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("reply %v", r.msg.MessageType())
			}
		})
	}
	// Ethernet padding of a minimum-size frame is accepted whatever its
	// content (some NICs do not pad with zeros).
	f := frameFilter{serverMAC: [6]byte(srvMAC), serverIP: 0x0a000202, subnetBC: 0x0a0002ff}
	tf := clientFrame([]byte{1, 2, 3, 4, 5})
	b := append(tf.bytes(), bytes.Repeat([]byte{0xa5}, 60-47)...)
	var fi frameInfo
	if v := parseFrame(b, &f, &fi); v != verdictNone || string(fi.payload) != "\x01\x02\x03\x04\x05" {
		t.Fatalf("padded 60-byte frame: %v, payload % x", v, fi.payload)
	}
}

// RFC 2131 4.3.2: a REQUEST from a client the server has no record of gets
// no reply (or a NAK when Authoritative), never an ACK; a known client
// asking for an address that is not its own is NAKed.
func TestRequestFromUnknownClient(t *testing.T) {
	resMAC := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 0x40}
	type step struct {
		mt    dhcpv4.MessageType
		mods  []dhcpv4.Modifier
		frame func(*testFrame)
	}
	discover := step{dhcpv4.MessageTypeDiscover, nil, nil}
	selecting := step{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.15")}, nil}
	initReboot := func(ip string) step { return step{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{reqIPOpt(ip)}, nil} }
	renewing := func(ip string) step {
		return step{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr(ip)}, unicastToServer(ip)}
	}
	rebinding := func(ip string) step {
		return step{dhcpv4.MessageTypeRequest, []dhcpv4.Modifier{ciaddr(ip)}, func(f *testFrame) { f.ipSrc = netip.MustParseAddr(ip) }}
	}
	release := step{dhcpv4.MessageTypeRelease, []dhcpv4.Modifier{sidOpt(), ciaddr("10.0.2.15")}, unicastToServer("10.0.2.15")}
	unknown := func(auth bool) Verdict {
		if auth {
			return VerdictNak
		}
		return VerdictUnknownClient
	}
	tests := []struct {
		name   string
		mac    net.HardwareAddr
		before []step
		last   step
		want   func(auth bool) Verdict
		yi     string
	}{
		{"INIT-REBOOT, no record, free pool address", nicMAC, nil, initReboot("10.0.2.20"), unknown, ""},
		{"INIT-REBOOT, no record, in subnet outside pool", nicMAC, nil, initReboot("10.0.2.100"), unknown, ""},
		{"INIT-REBOOT, no record, the server's address", nicMAC, nil, initReboot("10.0.2.2"), unknown, ""},
		{"INIT-REBOOT, wrong network", nicMAC, nil, initReboot("192.168.1.20"), func(bool) Verdict { return VerdictNak }, ""},
		{"INIT-REBOOT, own address", nicMAC, []step{discover, selecting}, initReboot("10.0.2.15"), func(bool) Verdict { return VerdictAck }, "10.0.2.15"},
		{"INIT-REBOOT, not its address", nicMAC, []step{discover, selecting}, initReboot("10.0.2.16"), func(bool) Verdict { return VerdictNak }, ""},
		{"INIT-REBOOT, released address (record kept)", nicMAC, []step{discover, selecting, release}, initReboot("10.0.2.15"), func(bool) Verdict { return VerdictAck }, "10.0.2.15"},
		{"RENEWING, no record", nicMAC, nil, renewing("10.0.2.17"), unknown, ""},
		{"RENEWING, not its address", nicMAC, []step{discover, selecting}, renewing("10.0.2.17"), func(bool) Verdict { return VerdictNak }, ""},
		{"RENEWING, own address", nicMAC, []step{discover, selecting}, renewing("10.0.2.15"), func(bool) Verdict { return VerdictAck }, "10.0.2.15"},
		{"REBINDING, no record", nicMAC, nil, rebinding("10.0.2.17"), unknown, ""},
		{"REBINDING, no record, outside the subnet", nicMAC, nil, rebinding("192.168.1.17"), unknown, ""},
		{"REBINDING, own address", nicMAC, []step{discover, selecting}, rebinding("10.0.2.15"), func(bool) Verdict { return VerdictAck }, "10.0.2.15"},
		// A reservation is the reserved client's record of its address.
		{"reserved client, INIT-REBOOT reserved address", resMAC, nil, initReboot("10.0.2.40"), func(bool) Verdict { return VerdictAck }, "10.0.2.40"},
		{"reserved client, INIT-REBOOT another address", resMAC, nil, initReboot("10.0.2.20"), func(bool) Verdict { return VerdictNak }, ""},
		{"reserved client, RENEWING reserved address", resMAC, nil, renewing("10.0.2.40"), func(bool) Verdict { return VerdictAck }, "10.0.2.40"},
		{"reserved client, REBINDING another address", resMAC, nil, rebinding("10.0.2.41"), func(bool) Verdict { return VerdictNak }, ""},
		{"other client, INIT-REBOOT a reserved address", nicMAC, nil, initReboot("10.0.2.40"), unknown, ""},
	}
	for _, auth := range []bool{false, true} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("authoritative=%v/%s", auth, tc.name), func(t *testing.T) {
				s, _ := newTestServer(t, func(c *Config) {
					c.Authoritative = auth
					c.Reservations = []Reservation{{MAC: resMAC, IP: netip.MustParseAddr("10.0.2.40")}}
					c.AllowedMACs = append(c.AllowedMACs, resMAC)
				})
				c := newClient(t, s, tc.mac)
				for i, st := range tc.before {
					if v, _ := c.send(c.msg(st.mt, st.mods...), st.frame); v.IsDrop() {
						t.Fatalf("setup step %d: %v", i, v)
					}
				}
				leases := fmt.Sprint(s.Leases())
				before := s.Counters()
				v, r := c.send(c.msg(tc.last.mt, tc.last.mods...), tc.last.frame)
				want := tc.want(auth)
				if v != want {
					t.Fatalf("verdict %v, want %v", v, want)
				}
				after := s.Counters()
				if want == VerdictUnknownClient {
					if r != nil || after.IgnoredUnknownClient != before.IgnoredUnknownClient+1 {
						t.Fatalf("reply %v, ignored_unknown_client %d", r != nil, after.IgnoredUnknownClient)
					}
					if got := fmt.Sprint(s.Leases()); got != leases {
						t.Fatalf("leases changed: %s -> %s", leases, got)
					}
				}
				if r != nil && r.msg.YourIPAddr.String() != map[bool]string{true: tc.yi, false: "0.0.0.0"}[tc.yi != ""] {
					t.Fatalf("yiaddr %v, want %q", r.msg.YourIPAddr, tc.yi)
				}
				if err := s.table.check(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

// RFC 6842: option 61 is echoed verbatim in OFFER, ACK and NAK, for every
// length the decoder accepts, even when the reply is held to 576 bytes and
// the configuration fills it.
func TestClientIDEchoedInEveryReply(t *testing.T) {
	var routes []Route
	for i := 0; i < MaxRoutes; i++ {
		routes = append(routes, Route{Dest: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24), Gateway: routerIP})
	}
	var dns []netip.Addr
	for i := 0; i < MaxDNSServers; i++ {
		dns = append(dns, netip.AddrFrom4([4]byte{10, 0, 2, byte(100 + i)}))
	}
	full := func(c *Config) {
		c.Routes, c.DNS, c.Domain = routes, dns, strings.Repeat("d", 60)+"."+strings.Repeat("e", 60)+".example"
		c.Reservations = []Reservation{{MAC: nicMAC, IP: netip.MustParseAddr("10.0.2.40"), Hostname: strings.Repeat("h", 63)}}
	}
	for _, n := range []int{1, 2, 3, 16, 200, 254, 255} {
		id := make([]byte, n)
		for i := range id {
			id[i] = byte(0xf1 + i*7)
		}
		for _, o57 := range [][]byte{nil, {0, 0}, {0x02, 0x40}, {0xff, 0xff}} {
			for _, mtu := range []int{576, 1500} {
				name := fmt.Sprintf("len%d/57=% x/mtu%d", n, o57, mtu)
				t.Run(name, func(t *testing.T) {
					s, _ := newTestServer(t, func(c *Config) { full(c); c.MTU = mtu })
					c := newClient(t, s, nicMAC)
					mods := []dhcpv4.Modifier{
						dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, id),
						dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionHostName, dhcpv4.OptionDomainName),
					}
					if o57 != nil {
						mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionMaximumDHCPMessageSize, o57))
					}
					check := func(what string, v, want Verdict, r *parsedReply) {
						t.Helper()
						if v != want {
							t.Fatalf("%s: verdict %v, want %v", what, v, want)
						}
						if got := r.msg.Options.Get(dhcpv4.OptionClientIdentifier); !bytes.Equal(got, id) {
							t.Fatalf("%s: client id echoed as % x, want % x", what, got, id)
						}
						if 28+len(r.payload) > 576 && (o57 == nil || mtu == 576 || binary.BigEndian.Uint16(o57) <= 576) {
							t.Fatalf("%s: %d-byte datagram over 576", what, 28+len(r.payload))
						}
						if r.msg.ServerIdentifier() == nil {
							t.Fatalf("%s: no server identifier", what)
						}
						if want != VerdictNak && r.msg.IPAddressLeaseTime(0) == 0 {
							t.Fatalf("%s: no lease time (RFC 2131 table 3: MUST)", what)
						}
					}
					v, r := c.send(c.msg(dhcpv4.MessageTypeDiscover, mods...), nil)
					check("OFFER", v, VerdictOffer, r)
					v, r = c.send(c.msg(dhcpv4.MessageTypeRequest, append([]dhcpv4.Modifier{sidOpt(), reqIPOpt("10.0.2.40")}, mods...)...), nil)
					check("ACK", v, VerdictAck, r)
					v, r = c.send(c.msg(dhcpv4.MessageTypeRequest, append([]dhcpv4.Modifier{reqIPOpt("10.0.2.41")}, mods...)...), nil)
					check("NAK", v, VerdictNak, r)
				})
			}
		}
	}
}

// A server with no VLAN configured ignores tagged frames: one tag, a
// priority tag, stacked tags, 802.1ad and the pre-standard 0x9100 TPID.
func TestVLANTaggedFramesIgnored(t *testing.T) {
	plain := validDiscoverFrame().bytes()
	tag := func(b []byte, tpid uint16, tci uint16) []byte {
		t := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(nil, tpid), tci)
		return append(append(append([]byte{}, b[:12]...), t...), b[12:]...)
	}
	tests := map[string][]byte{
		"802.1Q VID 100":           tag(plain, 0x8100, 100),
		"802.1Q priority tag":      tag(plain, 0x8100, 0xa000),
		"802.1Q in 802.1Q":         tag(tag(plain, 0x8100, 7), 0x8100, 8),
		"802.1Q in 802.1ad":        tag(tag(plain, 0x8100, 7), 0x88a8, 8),
		"802.1ad alone":            tag(plain, 0x88a8, 9),
		"0x9100 outer tag":         tag(tag(plain, 0x8100, 7), 0x9100, 8),
		"tag cut short":            tag(plain, 0x8100, 100)[:16],
		"802.1Q VID 100, unicast":  tag(func() []byte { f := validDiscoverFrame(); f.dst = srvMAC; return f.bytes() }(), 0x8100, 100),
		"802.1Q around a non-IPv4": tag(append(append(append([]byte{}, plain[:12]...), 0x08, 0x06), plain[14:]...), 0x8100, 5),
	}
	for name, frame := range tests {
		t.Run(name, func(t *testing.T) {
			s, _ := newTestServer(t, nil)
			out, v := s.HandleFrame(frame, nil)
			if v != VerdictVLANTagged || out != nil {
				t.Fatalf("verdict %v, reply %v", v, out != nil)
			}
			if c := s.Counters(); c.IgnoredVLANTagged != 1 || c.FramesIn != 1 || c.RepliesOut != 0 {
				t.Fatalf("counters %+v", c)
			}
			if len(s.Leases()) != 0 {
				t.Fatal("a tagged frame created a lease")
			}
		})
	}
}

// README.md's Counters section names every counter exactly once, in the
// tables (verdicts) or the "Other counters" paragraph, and nothing else.
func TestREADMECounterList(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, sec, ok := strings.Cut(string(b), "\n## Counters\n")
	if !ok {
		t.Fatal("no Counters section")
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	listed := map[string]int{}
	for _, line := range strings.Split(sec, "\n") {
		if m := regexp.MustCompile("^\\| `([a-z0-9_]+)` \\|").FindStringSubmatch(line); m != nil {
			listed[m[1]]++
		}
	}
	_, other, _ := strings.Cut(sec, "Other counters:")
	// Names there all have an underscore (unlike `out`, the argument).
	for _, m := range regexp.MustCompile("`([a-z0-9]+_[a-z0-9_]+)`").FindAllStringSubmatch(other, -1) {
		listed[m[1]]++
	}
	for id := counterID(1); id < numCounters; id++ {
		if n := listed[counterNames[id]]; n != 1 {
			t.Errorf("counter %q listed %d times", counterNames[id], n)
		}
		delete(listed, counterNames[id])
	}
	for name := range listed {
		t.Errorf("README lists %q, which is no counter", name)
	}
}

// replyOptionCodes lists the option codes of a reply's options field in order.
func replyOptionCodes(payload []byte) []byte {
	var codes []byte
	for i := bootpOptOff; i < len(payload); {
		switch c := payload[i]; c {
		case optPad:
			i++
		case optEnd:
			return codes
		default:
			codes = append(codes, c)
			i += 2 + int(payload[i+1])
		}
	}
	return codes
}

// RFC 2132 9.8: requested options go in the order the client listed them;
// RFC 2131 4.3.1: as many requested options as possible, so under the size
// limit unrequested ones give way first.
func TestRequestedOptionsFirstInClientOrder(t *testing.T) {
	s, _ := newTestServer(t, nil)
	c := newClient(t, s, nicMAC)
	prl := []byte{15, 6, 15, 3, 1, 28, 26, 59, 58, 200}
	_, r := c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithGeneric(dhcpv4.OptionParameterRequestList, prl)), nil)
	got := replyOptionCodes(r.payload)
	want := []byte{53, 54, 51, 15, 6, 3, 1, 28, 26, 59, 58}
	if !bytes.Equal(got, want) {
		t.Fatalf("option order %v, want %v", got, want)
	}

	var routes []Route
	for i := 0; i < MaxRoutes; i++ {
		routes = append(routes, Route{Dest: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24), Gateway: routerIP})
	}
	s, _ = newTestServer(t, func(c *Config) { c.Routes, c.Domain = routes, strings.Repeat(strings.Repeat("d", 49)+".", 4)+"example" })
	c = newClient(t, s, nicMAC)
	_, r = c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter)), nil)
	if n := len(r.msg.ClasslessStaticRoute()); n != MaxRoutes+1 {
		t.Fatalf("requested option 121 left out (%d routes) for unrequested ones: %v", n, replyOptionCodes(r.payload))
	}
	if r.msg.Options.Has(dhcpv4.OptionDomainName) || s.Counters().ReplyOptionsOmitted == 0 {
		t.Fatalf("the unrequested domain should have given way: %v", replyOptionCodes(r.payload))
	}
	if 28+len(r.payload) > 576 {
		t.Fatalf("%d-byte datagram", 28+len(r.payload))
	}
}
