package virtionet

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

type csumMode int

const (
	csumFull    csumMode = iota // complete UDP checksum
	csumNone                    // UDP checksum 0 (none)
	csumPartial                 // pseudo-header sum only, as with NEEDS_CSUM
	csumWrong                   // a wrong complete checksum
)

func ethFrame(dst, src [6]byte, et uint16, payload []byte) []byte {
	b := make([]byte, EthHeaderLen+len(payload))
	copy(b[0:], dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], et)
	copy(b[EthHeaderLen:], payload)
	return b
}

// udpFrame builds Ethernet/IPv4/UDP. It returns the frame and, for
// csumPartial, where the checksum starts and its offset (virtio-net header
// csum_start/csum_offset).
func udpFrame(dst, src [6]byte, sip, dip [4]byte, sport, dport uint16, payload []byte, mode csumMode) ([]byte, uint16, uint16) {
	udpLen := 8 + len(payload)
	ip := make([]byte, 20+udpLen)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	ip[8] = 64
	ip[9] = ipProtoUDP
	copy(ip[12:], sip[:])
	copy(ip[16:], dip[:])
	binary.BigEndian.PutUint16(ip[10:], ^fold(sum16(ip[:20], 0)))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(udpLen))
	copy(udp[8:], payload)
	pseudo := pseudoSum(sip, dip, udpLen)
	switch mode {
	case csumFull, csumWrong:
		c := ^fold(sum16(udp, pseudo))
		if c == 0 {
			c = 0xffff
		}
		if mode == csumWrong {
			c ^= 0x5a5a
		}
		binary.BigEndian.PutUint16(udp[6:], c)
	case csumPartial:
		binary.BigEndian.PutUint16(udp[6:], fold(pseudo))
	}
	return ethFrame(dst, src, etherTypeIPv4, ip), EthHeaderLen + 20, 6
}

func pseudoSum(sip, dip [4]byte, udpLen int) uint64 {
	var p [12]byte
	copy(p[0:], sip[:])
	copy(p[4:], dip[:])
	p[9] = ipProtoUDP
	binary.BigEndian.PutUint16(p[10:], uint16(udpLen))
	return sum16(p[:], 0)
}

// udpChecksumOK verifies the UDP checksum of an untagged IPv4 frame with a
// 20-byte IP header.
func udpChecksumOK(t testing.TB, frame []byte) bool {
	t.Helper()
	ip := frame[EthHeaderLen:]
	udpLen := int(binary.BigEndian.Uint16(ip[2:])) - 20
	udp := ip[20 : 20+udpLen]
	if binary.BigEndian.Uint16(udp[6:]) == 0 {
		return false
	}
	return fold(sum16(udp, pseudoSum([4]byte(ip[12:16]), [4]byte(ip[16:20]), udpLen))) == 0xffff
}

var (
	bcastMAC = [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	zeroIP   = [4]byte{}
	bcastIP  = [4]byte{255, 255, 255, 255}
)

// discover returns a broadcast DHCPDISCOVER frame from the guest's MAC.
func discover(t testing.TB, mode csumMode) ([]byte, uint16, uint16) {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(net.HardwareAddr(guestMAC[:]), dhcpv4.WithBroadcast(true))
	if err != nil {
		t.Fatal(err)
	}
	return udpFrame(bcastMAC, guestMAC, zeroIP, bcastIP, 68, 67, m.ToBytes(), mode)
}

// arpRequest returns an ARP request from the guest for ip.
func arpRequest(ip [4]byte) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:], guestMAC[:])
	copy(p[24:], ip[:])
	return ethFrame(bcastMAC, guestMAC, 0x0806, p)
}

// pattern returns n bytes of a recognisable pattern seeded by s.
func pattern(n int, s byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ s
	}
	return b
}

// rawFrame returns an Ethernet frame of n bytes (EtherType 0x88b5, local
// experimental) to the guest, with payload pattern s.
func rawFrame(n int, s byte) []byte {
	return ethFrame(guestMAC, hostMAC, 0x88b5, pattern(n-EthHeaderLen, s))
}
