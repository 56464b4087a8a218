package virtionet

import (
	"encoding/binary"

	"github.com/corral-vmm/corral/dhcp"
)

// FrameHandler sees the frames the guest transmits before the backend does,
// and may answer them: the built-in DHCP server sits here (see DHCP). The
// device calls it from its transmit goroutine only, on frames without GSO
// whose partial checksum (if any) it has completed.
type FrameHandler interface {
	// Match reports, cheaply and without side effects, whether Handle wants
	// the frame. Frames it does not match go straight to the backend.
	Match(frame []byte) bool
	// Handle takes a matched frame. It returns a reply frame for the guest
	// (built in out when it fits, or nil) and whether it consumed the frame:
	// a consumed frame never reaches the backend. frame is only valid during
	// the call; the reply only until the next call.
	Handle(frame, out []byte) (reply []byte, consumed bool)
	// ReplyBufferSize is the capacity out needs for Handle not to allocate.
	ReplyBufferSize() int
}

// DHCP returns a FrameHandler that puts srv on the wire between the guest
// and the backend:
//
//   - Match picks IPv4 UDP datagrams to port 67 (behind at most one 802.1Q
//     tag, first fragments only); everything else goes to the host untouched
//     and never takes the server's lock.
//   - Handle feeds a matched frame to srv.HandleFrame. Its reply (OFFER, ACK,
//     NAK) goes into the guest's receive ring. The frame is consumed unless
//     the verdict is dhcp.VerdictNotDHCP, which the server gives to
//     well-formed DHCP traffic addressed to another server (another
//     destination MAC or IP): that goes on to the host. Every other verdict,
//     drops of malformed or rate-limited requests included, keeps the frame
//     from the host, so a broken or flooding DHCP client never reaches a
//     DHCP server on the host's network.
//
// A non-first IPv4 fragment is not matched (it has no UDP header to look
// at); without its first fragment, which is consumed, the host cannot
// reassemble it.
//
// The server does not answer ARP, and clients renew by unicast to the
// server's address: give the server the TAP's host address and MAC
// (Network.DHCPConfig does), so the host answers ARP for it and the renewal,
// sent to that MAC, is intercepted here like the broadcasts.
func DHCP(srv *dhcp.Server) FrameHandler { return dhcpHandler{srv} }

type dhcpHandler struct{ srv *dhcp.Server }

func (h dhcpHandler) Match(frame []byte) bool { return isUDPToPort(frame, dhcpServerPort) }

func (h dhcpHandler) Handle(frame, out []byte) ([]byte, bool) {
	reply, v := h.srv.HandleFrame(frame, out)
	return reply, v != dhcp.VerdictNotDHCP
}

func (h dhcpHandler) ReplyBufferSize() int { return h.srv.ReplyBufferSize() }

const (
	dhcpServerPort = 67
	etherTypeIPv4  = 0x0800
	etherTypeVLAN  = 0x8100
	ipProtoUDP     = 17
)

// isUDPToPort reports whether frame is an Ethernet II frame (optionally with
// one 802.1Q tag) carrying an IPv4 datagram that is UDP, not a later
// fragment, and whose UDP header (inside the frame) has destination port.
func isUDPToPort(frame []byte, port uint16) bool {
	if len(frame) < EthHeaderLen {
		return false
	}
	off := EthHeaderLen
	et := binary.BigEndian.Uint16(frame[12:])
	if et == etherTypeVLAN {
		if len(frame) < EthHeaderLen+VLANTagLen {
			return false
		}
		et = binary.BigEndian.Uint16(frame[16:])
		off += VLANTagLen
	}
	if et != etherTypeIPv4 {
		return false
	}
	ip := frame[off:]
	if len(ip) < 20 || ip[0]>>4 != 4 || ip[9] != ipProtoUDP {
		return false
	}
	if binary.BigEndian.Uint16(ip[6:])&0x1fff != 0 {
		return false // a later fragment
	}
	ihl := int(ip[0]&0x0f) * 4
	if ihl < 20 || len(ip) < ihl+8 {
		return false
	}
	return binary.BigEndian.Uint16(ip[ihl+2:]) == port
}
