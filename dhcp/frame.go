package dhcp

import "encoding/binary"

// Ethernet II layout and the tag protocol identifiers of VLAN tags.
const (
	ethAddrLen    = 6
	ethDstOff     = 0
	ethSrcOff     = 6
	ethTypeOff    = 12
	ethHeaderLen  = 14
	etherTypeIPv4 = 0x0800
	etherTypeVLAN = 0x8100 // 802.1Q customer tag
	etherTypeQinQ = 0x88a8 // 802.1ad service tag
	etherType9100 = 0x9100 // pre-standard stacked-VLAN outer tag
)

// IPv4 header layout.
const (
	ipv4MinHeaderLen = 20
	ipVerIHLOff      = 0
	ipTOSOff         = 1
	ipTotalLenOff    = 2
	ipIDOff          = 4
	ipFlagsFragOff   = 6
	ipTTLOff         = 8
	ipProtoOff       = 9
	ipChecksumOff    = 10
	ipSrcOff         = 12
	ipDstOff         = 16
	ipProtoUDP       = 17
	ipFlagMF         = 0x2000
	ipFragOffMask    = 0x1fff
	ipReplyTTL       = 64
)

// UDP header layout and DHCP ports.
const (
	udpHeaderLen   = 8
	udpSrcPortOff  = 0
	udpDstPortOff  = 2
	udpLenOff      = 4
	udpChecksumOff = 6
	portServer     = 67
	portClient     = 68
	// ipUDPHeaderLen is what the IPv4 and UDP headers of a reply add to the
	// DHCP message (the maximum message size option counts them).
	ipUDPHeaderLen = ipv4MinHeaderLen + udpHeaderLen
)

const ipBroadcast = 0xffffffff

// frameInfo is what parseFrame learned from a frame. payload aliases the frame.
type frameInfo struct {
	dst, src [ethAddrLen]byte
	ipSrc    uint32
	ipDst    uint32
	srcPort  uint16
	payload  []byte
}

// frameFilter says which destinations count as addressed to the server.
type frameFilter struct {
	serverMAC [ethAddrLen]byte
	serverIP  uint32
	subnetBC  uint32 // directed broadcast address of the served subnet
}

// parseFrame checks an Ethernet frame (no FCS) down to the UDP payload. It
// returns verdictNone and fills fi when the frame is a well-formed UDP datagram
// to port 67 for the server, VerdictNotDHCP when it is addressed elsewhere,
// VerdictVLANTagged for any tagged frame, or a drop verdict. Nothing in fi is
// meaningful unless verdictNone is returned.
//
// Lengths come from the headers, never from the frame: bytes after the IPv4
// total length (Ethernet padding up to 60 bytes, NIC trailers) and bytes of
// the IP payload after the UDP length are not part of the datagram, and the
// UDP checksum covers exactly the UDP length (RFC 768, RFC 791; Linux does
// the same).
func parseFrame(b []byte, f *frameFilter, fi *frameInfo) Verdict {
	if len(b) < ethHeaderLen {
		return DropEthShort
	}
	copy(fi.dst[:], b[ethDstOff:ethDstOff+ethAddrLen])
	copy(fi.src[:], b[ethSrcOff:ethSrcOff+ethAddrLen])
	switch et := binary.BigEndian.Uint16(b[ethTypeOff:]); et {
	case etherTypeVLAN, etherTypeQinQ, etherType9100:
		// The server serves no VLAN: a tagged frame (priority tags and
		// stacked tags included) belongs to a network it is not on.
		return VerdictVLANTagged
	case etherTypeIPv4:
	default:
		return VerdictNotDHCP
	}
	if fi.dst != broadcastMAC() && fi.dst != f.serverMAC {
		return VerdictNotDHCP
	}

	ip := b[ethHeaderLen:]
	if len(ip) < ipv4MinHeaderLen {
		return DropIPShort
	}
	if ip[ipVerIHLOff]>>4 != 4 {
		return DropIPVersion
	}
	ihl := int(ip[ipVerIHLOff]&0x0f) * 4
	if ihl < ipv4MinHeaderLen || ihl > len(ip) {
		return DropIPHeaderLength
	}
	if fold(sum16(ip[:ihl], 0)) != 0xffff {
		return DropIPChecksum
	}
	total := int(binary.BigEndian.Uint16(ip[ipTotalLenOff:]))
	if total < ihl || total > len(ip) {
		return DropIPLength
	}
	ip = ip[:total] // what follows is padding or a trailer, not ours to judge
	if ip[ipProtoOff] != ipProtoUDP {
		return VerdictNotDHCP
	}
	fi.ipSrc = binary.BigEndian.Uint32(ip[ipSrcOff:])
	fi.ipDst = binary.BigEndian.Uint32(ip[ipDstOff:])
	if fi.ipDst != ipBroadcast && fi.ipDst != f.serverIP && fi.ipDst != f.subnetBC {
		return VerdictNotDHCP
	}
	if binary.BigEndian.Uint16(ip[ipFlagsFragOff:])&(ipFlagMF|ipFragOffMask) != 0 {
		return DropIPFragment // a later fragment has no UDP header to look at
	}
	udp := ip[ihl:]
	if len(udp) < udpHeaderLen {
		return DropUDPLength
	}
	if binary.BigEndian.Uint16(udp[udpDstPortOff:]) != portServer {
		return VerdictNotDHCP
	}
	ulen := int(binary.BigEndian.Uint16(udp[udpLenOff:]))
	if ulen < udpHeaderLen || ulen > len(udp) {
		return DropUDPLength
	}
	udp = udp[:ulen]
	if fi.src[0]&1 != 0 || fi.src == [ethAddrLen]byte{} {
		return DropSrcMAC
	}
	if binary.BigEndian.Uint16(udp[udpChecksumOff:]) != 0 {
		if fold(sum16(udp, pseudoHeaderSum(fi.ipSrc, fi.ipDst, ulen))) != 0xffff {
			return DropUDPChecksum
		}
	}
	fi.srcPort = binary.BigEndian.Uint16(udp[udpSrcPortOff:])
	fi.payload = udp[udpHeaderLen:]
	return verdictNone
}

// broadcastMAC returns ff:ff:ff:ff:ff:ff.
func broadcastMAC() [ethAddrLen]byte { return [ethAddrLen]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }
