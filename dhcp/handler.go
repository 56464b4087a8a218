package dhcp

import "encoding/binary"

// Match reports, cheaply and without taking the server's lock, whether
// frame is one Handle wants: an untagged IPv4 UDP datagram to port 67, and
// not a later fragment (which has no UDP header to look at). Tagged frames
// belong to a VLAN the server is not on: they go to the host untouched. With Handle and ReplyBufferSize it makes a Server the frame handler
// of a virtio-net device (virtionet.FrameHandler).
func (s *Server) Match(frame []byte) bool {
	if len(frame) < ethHeaderLen {
		return false
	}
	if binary.BigEndian.Uint16(frame[ethTypeOff:]) != etherTypeIPv4 {
		return false
	}
	ip := frame[ethHeaderLen:]
	if len(ip) < ipv4MinHeaderLen || ip[ipVerIHLOff]>>4 != 4 || ip[ipProtoOff] != ipProtoUDP {
		return false
	}
	if binary.BigEndian.Uint16(ip[ipFlagsFragOff:])&ipFragOffMask != 0 {
		return false
	}
	ihl := int(ip[ipVerIHLOff]&0x0f) * 4
	if ihl < ipv4MinHeaderLen || len(ip) < ihl+udpHeaderLen {
		return false
	}
	return binary.BigEndian.Uint16(ip[ihl+udpDstPortOff:]) == portServer
}

// Handle feeds a matched frame to HandleFrame and says whether the frame is
// consumed: every verdict but VerdictNotDHCP keeps it from the host, so a
// broken or flooding DHCP client never reaches a DHCP server on the host's
// network, while DHCP traffic for another server (VerdictNotDHCP) goes on.
// The reply, if any, is for the guest.
func (s *Server) Handle(frame, out []byte) (reply []byte, consumed bool) {
	reply, v := s.HandleFrame(frame, out)
	return reply, v != VerdictNotDHCP
}
