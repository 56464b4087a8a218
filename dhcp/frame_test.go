package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
)

// validDiscoverFrame returns a well-formed broadcast DISCOVER frame.
func validDiscoverFrame() testFrame {
	return clientFrame(rawMessage(1, 1, 6, nicMAC, discoverOpts()))
}

// fixIPChecksum recomputes the IPv4 header checksum of an untagged frame.
func fixIPChecksum(b []byte) {
	ihl := int(b[14]&0x0f) * 4
	binary.BigEndian.PutUint16(b[24:], 0)
	binary.BigEndian.PutUint16(b[24:], naiveChecksum(b[14:14+ihl]))
}

func TestParseFrame(t *testing.T) {
	base := validDiscoverFrame()
	tests := []struct {
		name string
		make func() []byte
		want Verdict
	}{
		{"valid", func() []byte { return base.bytes() }, VerdictOffer},
		{"valid without UDP checksum", func() []byte { f := base; f.noUDPChecksum = true; return f.bytes() }, VerdictOffer},
		{"VLAN tag ignored", func() []byte { f := base; f.vlan, f.tci = true, 0x2064; return f.bytes() }, VerdictVLANTagged},
		{"valid unicast to server MAC", func() []byte { f := base; f.dst = srvMAC; return f.bytes() }, VerdictOffer},
		{"empty", func() []byte { return nil }, DropEthShort},
		{"13 bytes", func() []byte { return base.bytes()[:13] }, DropEthShort},
		{"VLAN header cut", func() []byte { f := base; f.vlan = true; return f.bytes()[:16] }, VerdictVLANTagged},
		{"two VLAN tags", func() []byte {
			f := base
			f.vlan = true
			b := f.bytes()
			return append(append(append([]byte{}, b[:16]...), 0x81, 0x00, 0x00, 0x05), b[16:]...)
		}, VerdictVLANTagged},
		{"802.1ad outer tag", func() []byte {
			b := base.bytes()
			return append(append(append([]byte{}, b[:12]...), 0x88, 0xa8, 0x00, 0x05), b[12:]...)
		}, VerdictVLANTagged},
		{"ARP", func() []byte { b := base.bytes(); b[12], b[13] = 0x08, 0x06; return b }, VerdictNotDHCP},
		{"IPv6", func() []byte { b := base.bytes(); b[12], b[13] = 0x86, 0xdd; return b }, VerdictNotDHCP},
		{"802.3 length", func() []byte { b := base.bytes(); b[12], b[13] = 0x01, 0x00; return b }, VerdictNotDHCP},
		{"to another MAC", func() []byte { f := base; f.dst = net.HardwareAddr{2, 0, 0, 0, 0, 9}; return f.bytes() }, VerdictNotDHCP},
		{"to another IP", func() []byte { f := base; f.ipDst = netip.MustParseAddr("10.0.2.9"); return f.bytes() }, VerdictNotDHCP},
		{"to UDP 53", func() []byte { f := base; f.dstPort = 53; return f.bytes() }, VerdictNotDHCP},
		{"TCP", func() []byte { b := base.bytes(); b[23] = 6; fixIPChecksum(b); return b }, VerdictNotDHCP},
		{"source MAC multicast", func() []byte { f := base; f.src = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}; return f.bytes() }, DropSrcMAC},
		{"source MAC zero", func() []byte { f := base; f.src = make(net.HardwareAddr, 6); return f.bytes() }, DropSrcMAC},
		{"IP header cut", func() []byte { return base.bytes()[:14+19] }, DropIPShort},
		{"IP version 6 in IPv4 EtherType", func() []byte { b := base.bytes(); b[14] = 0x65; fixIPChecksum(b); return b }, DropIPVersion},
		{"IHL 4", func() []byte { b := base.bytes(); b[14] = 0x44; return b }, DropIPHeaderLength},
		{"IHL 15 past frame", func() []byte { b := base.bytes()[:14+40]; b[14] = 0x4f; return b }, DropIPHeaderLength},
		{"IP checksum", func() []byte { b := base.bytes(); b[24] ^= 0xff; return b }, DropIPChecksum},
		{"total length past frame", func() []byte {
			b := base.bytes()
			binary.BigEndian.PutUint16(b[16:], uint16(len(b)-14+1))
			fixIPChecksum(b)
			return b
		}, DropIPLength},
		{"total length below header", func() []byte {
			b := base.bytes()
			binary.BigEndian.PutUint16(b[16:], 19)
			fixIPChecksum(b)
			return b
		}, DropIPLength},
		{"trailing bytes after datagram", func() []byte { return append(base.bytes(), 0, 0, 0, 0) }, VerdictOffer},
		{"more fragments", func() []byte { b := base.bytes(); b[20] = 0x20; fixIPChecksum(b); return b }, DropIPFragment},
		{"fragment offset", func() []byte { b := base.bytes(); b[21] = 0x10; fixIPChecksum(b); return b }, DropIPFragment},
		{"DF allowed", func() []byte { b := base.bytes(); b[20] = 0x40; fixIPChecksum(b); return b }, VerdictOffer},
		{"UDP header cut", func() []byte {
			b := base.bytes()[:14+20+6]
			binary.BigEndian.PutUint16(b[16:], 26)
			fixIPChecksum(b)
			return b
		}, DropUDPLength},
		{"UDP length short cuts END off", func() []byte {
			b := base.bytes() // options 53 1 1 255 at UDP offset 8+240, then zeros
			binary.BigEndian.PutUint16(b[38:], 8+243)
			return b
		}, DropUDPChecksum},
		{"UDP length short cuts END off, no checksum", func() []byte {
			f := base
			f.noUDPChecksum = true
			b := f.bytes()
			binary.BigEndian.PutUint16(b[38:], 8+243)
			return b
		}, DropOptionMissingEnd},
		{"UDP length long", func() []byte { b := base.bytes(); binary.BigEndian.PutUint16(b[38:], uint16(len(b)-34+1)); return b }, DropUDPLength},
		{"UDP length below header", func() []byte { b := base.bytes(); binary.BigEndian.PutUint16(b[38:], 4); return b }, DropUDPLength},
		{"UDP checksum", func() []byte { f := base; f.badUDPChecksum = true; return f.bytes() }, DropUDPChecksum},
		{"UDP source port 1234", func() []byte { f := base; f.srcPort = 1234; return f.bytes() }, DropUDPSrcPort},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, nil)
			out, v := s.HandleFrame(tc.make(), nil)
			if v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			if (out != nil) != v.HasReply() {
				t.Fatalf("reply %v for verdict %v", out != nil, v)
			}
			if c := s.Counters(); c.Get(tc.want) != 1 || c.FramesIn != 1 {
				t.Errorf("counter %s = %d, frames_in %d", tc.want, c.Get(tc.want), c.FramesIn)
			}
		})
	}
}

// A short IPv4 datagram in a 60-byte minimum frame carries Ethernet padding,
// which must be accepted (the datagram is cut to its total length), and so
// must a trailer after a datagram of any size.
func TestParseFramePadding(t *testing.T) {
	f := frameFilter{serverMAC: [6]byte(srvMAC), serverIP: 0x0a000202, subnetBC: 0x0a0002ff}
	tf := clientFrame([]byte{1, 2, 3, 4})
	tf.ipDst = srvIP
	b := tf.bytes() // 14+20+8+4 = 46 bytes
	padded := append(append([]byte{}, b...), make([]byte, 60-len(b))...)
	var fi frameInfo
	if v := parseFrame(padded, &f, &fi); v != verdictNone {
		t.Fatalf("padded frame: %v", v)
	}
	if string(fi.payload) != "\x01\x02\x03\x04" {
		t.Fatalf("payload % x", fi.payload)
	}
	long := clientFrame(make([]byte, 100))
	lb := append(long.bytes(), 0xee)
	if v := parseFrame(lb, &f, &fi); v != verdictNone || len(fi.payload) != 100 {
		t.Fatalf("trailing byte on long frame: %v, payload %d bytes", v, len(fi.payload))
	}
}

func TestChecksumMatchesNaive(t *testing.T) {
	for n := 0; n < 300; n++ {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*131 + n*7 + 0xa5)
		}
		if got, want := ^fold(sum16(b, 0)), naiveChecksum(b); got != want {
			t.Fatalf("len %d: checksum %#x, naive %#x", n, got, want)
		}
	}
}
