package dhcp

import (
	"encoding/binary"
	"time"
)

// staticOptions are option values fixed by the configuration, encoded once.
type staticOptions struct {
	serverID  []byte
	mask      []byte
	router    []byte // empty = none
	dns       []byte // empty = none
	domain    []byte // empty = none
	broadcast []byte
	mtu       []byte
	routes    []byte // option 121 value; empty = none
}

func u32bytes(v uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, v)
	return b
}

func newStaticOptions(s *settings) staticOptions {
	o := staticOptions{
		serverID:  u32bytes(s.serverIP),
		mask:      u32bytes(s.mask),
		broadcast: u32bytes(s.bcast),
		mtu:       binary.BigEndian.AppendUint16(nil, uint16(s.mtu)),
		domain:    []byte(s.domain),
	}
	if s.router != 0 {
		o.router = u32bytes(s.router)
	}
	for _, d := range s.dns {
		o.dns = binary.BigEndian.AppendUint32(o.dns, d)
	}
	if len(s.routes) > 0 {
		// RFC 3442: a client given option 121 ignores option 3, so the
		// default route goes in too unless the routes already have one.
		hasDefault := false
		for _, r := range s.routes {
			hasDefault = hasDefault || r.Dest.Bits() == 0
		}
		if !hasDefault && s.router != 0 {
			o.routes = appendRoute(o.routes, 0, 0, s.router)
		}
		for _, r := range s.routes {
			o.routes = appendRoute(o.routes, ip4(r.Dest.Addr()), r.Dest.Bits(), ip4(r.Gateway))
		}
	}
	return o
}

// appendRoute encodes one RFC 3442 route: width, significant octets, router.
func appendRoute(b []byte, dest uint32, bits int, gw uint32) []byte {
	b = append(b, byte(bits))
	for i := 0; i < (bits+7)/8; i++ {
		b = append(b, byte(dest>>(24-8*i)))
	}
	return binary.BigEndian.AppendUint32(b, gw)
}

// replySpec is what a handler decided to send.
type replySpec struct {
	typ       byte
	yiaddr    uint32
	ciaddr    uint32
	leaseSecs uint32 // granted lease; ignored unless withLease
	withLease bool
	hostname  []byte
}

// grantedLease returns the lease to grant: the configured one, or the
// client's shorter request (option 51) but not under minGrantedLease.
func (s *Server) grantedLease(m *message) uint32 {
	base := s.cfg.leaseSecs
	if v, ok := m.optU32(optLeaseTime); ok && v < base {
		return max(v, min(base, uint32(minGrantedLease/time.Second)))
	}
	return base
}

// leaseExpiry returns when a lease of secs seconds granted at now ends.
func leaseExpiry(now time.Duration, secs uint32) time.Duration {
	if secs == 0xffffffff {
		return maxDuration
	}
	return addSat(now, time.Duration(secs)*time.Second)
}

// replyOption is one configuration option a reply may carry.
type replyOption struct {
	code byte
	val  []byte
}

// maxConfigOptions is how many configuration options configOptions knows.
const maxConfigOptions = 11

// configOptions encodes the configuration options of an OFFER or ACK. The
// client's requested options go first, in the order of its parameter request
// list (RFC 2132 9.8: MUST try), then the others in the server's priority
// order. The encoder leaves out whole whatever no longer fits, so under the
// size limit unrequested options give way to requested ones (RFC 2131 4.3.1:
// as many requested parameters as possible), and among the unrequested the
// last listed here (121, 12, 15, ...) go first.
func (s *Server) configOptions(e *encoder, m *message, r *replySpec) {
	o := &s.static
	var t1, t2 [4]byte
	var c [maxConfigOptions]replyOption
	n := 0
	if r.withLease && r.leaseSecs != 0xffffffff {
		binary.BigEndian.PutUint32(t1[:], r.leaseSecs/2)
		binary.BigEndian.PutUint32(t2[:], uint32(uint64(r.leaseSecs)*7/8))
		c[0], c[1] = replyOption{optRenewalTime, t1[:]}, replyOption{optRebindingTime, t2[:]}
		n = 2
	}
	for _, ro := range [...]replyOption{
		{optSubnetMask, o.mask}, {optRouter, o.router}, {optDNS, o.dns},
		{optBroadcastAddr, o.broadcast}, {optInterfaceMTU, o.mtu},
		{optDomainName, o.domain}, {optHostName, r.hostname},
	} {
		if len(ro.val) > 0 {
			c[n] = ro
			n++
		}
	}
	if len(o.routes) > 0 && m.requested(optClasslessRoutes) {
		c[n] = replyOption{optClasslessRoutes, o.routes}
		n++
	}
	var done [maxConfigOptions]bool
	prl, _ := m.opt(optParamRequestList)
	for _, code := range prl {
		for i := 0; i < n; i++ {
			if c[i].code == code && !done[i] { // a code listed twice is sent once
				e.option(c[i].code, c[i].val)
				done[i] = true
			}
		}
	}
	for i := 0; i < n; i++ {
		if !done[i] {
			e.option(c[i].code, c[i].val)
		}
	}
}

// maxMessageSize returns the largest IP datagram the reply may fill: option 57
// when it is valid (two bytes, at least 576), else 576, and never above the MTU.
func (s *Server) maxMessageSize(m *message) int {
	size := minMaxMessageSize
	if v, ok := m.opt(optMaxMessageSize); ok && len(v) == 2 {
		if n := int(binary.BigEndian.Uint16(v)); n >= minMaxMessageSize {
			size = n
		}
	}
	return min(size, s.cfg.mtu)
}

// buildReply writes the reply frame into out (allocating when out is too
// small) and returns it. Every write is bounded by the slice it goes to.
func (s *Server) buildReply(out []byte, fi *frameInfo, m *message, r *replySpec) []byte {
	if cap(out) < s.maxFrame {
		out = make([]byte, s.maxFrame)
		s.counts[cReplyBufferAlloc]++
	}
	out = out[:s.maxFrame]
	limit := s.maxMessageSize(m) - ipUDPHeaderLen // DHCP message bytes allowed, at least 548
	p := out[ethHeaderLen+ipUDPHeaderLen : ethHeaderLen+ipUDPHeaderLen+limit]

	// BOOTP fixed header (RFC 2131 table 3).
	clear(p[:bootpOptOff])
	p[bootpOpOff] = bootReply
	p[bootpHtypeOff] = m.htype
	p[bootpHlenOff] = m.hlen
	binary.BigEndian.PutUint32(p[bootpXidOff:], m.xid)
	flags := m.flags & flagBroadcast
	if r.typ == msgNak && m.giaddr != 0 {
		flags |= flagBroadcast // RFC 2131 4.3.2: the relay broadcasts the NAK
	}
	binary.BigEndian.PutUint16(p[bootpFlagsOff:], flags)
	binary.BigEndian.PutUint32(p[bootpCiaddrOff:], r.ciaddr)
	binary.BigEndian.PutUint32(p[bootpYiaddrOff:], r.yiaddr)
	binary.BigEndian.PutUint32(p[bootpGiaddrOff:], m.giaddr)
	copy(p[bootpChaddrOff:bootpChaddrOff+bootpChaddrLen], m.chaddr[:])
	binary.BigEndian.PutUint32(p[bootpCookieOff:], magicCookie)

	// 53, 54, 51 and a client identifier of up to 255 bytes come first and
	// always fit the smallest limit (240 + 3 + 6 + 6 + 257 + END < 548): RFC
	// 2131 table 3 requires 53, 54 and (but in an INFORM ACK) 51; RFC 6842
	// requires 61 echoed verbatim in every reply.
	e := encoder{b: p, n: bootpOptOff}
	o := &s.static
	e.optionByte(optMessageType, r.typ)
	e.option(optServerID, o.serverID)
	if r.typ != msgNak && r.withLease {
		e.optionU32(optLeaseTime, r.leaseSecs)
	}
	if id, ok := m.opt(optClientID); ok {
		e.option(optClientID, id) // RFC 6842: echo the client identifier
	}
	if r.typ != msgNak {
		s.configOptions(&e, m, r)
	}
	e.end()
	if e.n < bootpMinLen {
		clear(p[e.n:bootpMinLen])
		e.n = bootpMinLen
	}
	s.counts[cReplyOptionsOmitted] += uint64(e.omitted)
	dhcpLen := e.n

	// RFC 2131 section 4.1: where the reply goes.
	dstMAC, dstIP, dstPort := broadcastMAC(), uint32(ipBroadcast), uint16(portClient)
	switch {
	case m.giaddr != 0:
		dstMAC, dstIP, dstPort = fi.src, m.giaddr, portServer
	case r.typ == msgNak:
		// broadcast
	case m.ciaddr != 0:
		dstMAC, dstIP = fi.src, m.ciaddr
	case m.flags&flagBroadcast != 0:
		// broadcast
	case r.yiaddr != 0:
		copy(dstMAC[:], m.chaddr[:ethAddrLen])
		dstIP = r.yiaddr
	}

	// Ethernet header (requests come untagged: tagged frames are ignored).
	copy(out[ethDstOff:], dstMAC[:])
	copy(out[ethSrcOff:], s.cfg.serverMAC[:])
	binary.BigEndian.PutUint16(out[ethTypeOff:], etherTypeIPv4)

	// IPv4 header.
	ip := out[ethHeaderLen : ethHeaderLen+ipv4MinHeaderLen]
	total := ipUDPHeaderLen + dhcpLen
	ip[ipVerIHLOff] = 0x45
	ip[ipTOSOff] = 0
	binary.BigEndian.PutUint16(ip[ipTotalLenOff:], uint16(total))
	binary.BigEndian.PutUint16(ip[ipIDOff:], 0)
	binary.BigEndian.PutUint16(ip[ipFlagsFragOff:], 0)
	ip[ipTTLOff] = ipReplyTTL
	ip[ipProtoOff] = ipProtoUDP
	binary.BigEndian.PutUint16(ip[ipChecksumOff:], 0)
	binary.BigEndian.PutUint32(ip[ipSrcOff:], s.cfg.serverIP)
	binary.BigEndian.PutUint32(ip[ipDstOff:], dstIP)
	binary.BigEndian.PutUint16(ip[ipChecksumOff:], ^fold(sum16(ip, 0)))

	// UDP header and checksum.
	udp := out[ethHeaderLen+ipv4MinHeaderLen : ethHeaderLen+total]
	binary.BigEndian.PutUint16(udp[udpSrcPortOff:], portServer)
	binary.BigEndian.PutUint16(udp[udpDstPortOff:], dstPort)
	binary.BigEndian.PutUint16(udp[udpLenOff:], uint16(len(udp)))
	binary.BigEndian.PutUint16(udp[udpChecksumOff:], 0)
	cs := ^fold(sum16(udp, pseudoHeaderSum(s.cfg.serverIP, dstIP, len(udp))))
	if cs == 0 {
		cs = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(udp[udpChecksumOff:], cs)
	return out[:ethHeaderLen+total]
}
