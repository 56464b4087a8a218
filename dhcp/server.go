package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Server is a DHCP server for one virtual network. HandleFrame is its only
// input; it is safe for concurrent use (one mutex serialises all frames).
type Server struct {
	mu      sync.Mutex
	cfg     *settings
	filter  frameFilter
	clock   Clock
	log     *slog.Logger
	limiter *rateLimiter // nil when rate limiting is off
	table   *leaseTable
	msg     *message
	fi      frameInfo
	static  staticOptions
	counts  counterArray
	lastNow time.Duration
	keyBuf  [1 + maxClientIDLen]byte
	// maxFrame is the largest reply frame: an Ethernet header plus the MTU.
	maxFrame int
}

// New validates cfg and returns a server with an empty lease table. Errors
// wrap ErrConfig.
func New(cfg Config) (*Server, error) {
	st, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      st,
		filter:   frameFilter{serverMAC: st.serverMAC, serverIP: st.serverIP, subnetBC: st.bcast},
		clock:    cfg.Clock,
		log:      cfg.Logger,
		table:    newLeaseTable(st),
		msg:      newMessage(),
		static:   newStaticOptions(st),
		maxFrame: ethHeaderLen + st.mtu,
	}
	if s.clock == nil {
		s.clock = NewMonotonicClock()
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if !st.noRateLimit {
		s.limiter = newRateLimiter(st.rate, st.burst, st.globalRate)
	}
	s.lastNow = s.clock.Now()
	return s, nil
}

// ReplyBufferSize is the capacity an out buffer passed to HandleFrame needs so
// that no reply allocates: an Ethernet header plus the MTU.
func (s *Server) ReplyBufferSize() int { return s.maxFrame }

// HandleFrame processes one Ethernet frame (without FCS) that the guest sent
// and returns the reply frame to deliver back to the guest, if any, with the
// verdict. The reply is built in out when cap(out) >= ReplyBufferSize(), and
// then aliases out: it is valid until out is reused. With a smaller out a new
// buffer is allocated. frame is only read, and not retained.
func (s *Server) HandleFrame(frame, out []byte) ([]byte, Verdict) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[cFramesIn]++
	reply, v := s.handle(frame, out)
	if v >= numVerdicts || v == verdictNone {
		v = DropBadRequest // unreachable; keeps the verdict contract
		reply = nil
	}
	if v.IsDrop() && v != DropRateLimited { // a flood must not become a log flood
		s.logDrop(v, frame)
	}
	s.counts[v]++
	if reply != nil {
		s.counts[cRepliesOut]++
	}
	return reply, v
}

// Counters returns a snapshot of the server's counters.
func (s *Server) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts.snapshot()
}

// LeaseInfo describes one dynamic lease record.
type LeaseInfo struct {
	Client    string        // "id:" + hex of option 61, "hw:" + hex of htype and chaddr, or "" while quarantined
	IP        netip.Addr    // address the record owns
	Owner     string        // source MAC of the frame that created it
	State     string        // "offered", "bound", "released" or "declined"
	Remaining time.Duration // until the hold or lease ends; 0 when over; -1 for infinite
}

// Leases returns the dynamic lease records (reservations hold no records).
func (s *Server) Leases() []LeaseInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	var out []LeaseInfo
	for i := range s.table.slots {
		l := &s.table.slots[i]
		if l.state == stateFree {
			continue
		}
		li := LeaseInfo{Client: keyString(l.key), IP: addr4(l.ip), Owner: net.HardwareAddr(l.owner[:]).String(),
			State: [...]string{"free", "offered", "bound", "released", "declined"}[l.state]}
		switch {
		case l.state == stateReleased:
		case l.expiry == maxDuration:
			li.Remaining = -1
		case l.expiry > now:
			li.Remaining = l.expiry - now
		}
		out = append(out, li)
	}
	return out
}

// keyString renders a client key for LeaseInfo and logs.
func keyString(k string) string {
	switch {
	case k == "":
		return ""
	case k[0] == 'C':
		return fmt.Sprintf("id:%x", k[1:])
	default:
		return fmt.Sprintf("hw:%x", k[1:])
	}
}

// now reads the clock, never going backwards.
func (s *Server) now() time.Duration {
	if t := s.clock.Now(); t > s.lastNow {
		s.lastNow = t
	}
	return s.lastNow
}

func (s *Server) inSubnet(ip uint32) bool {
	return ip&s.cfg.mask == s.cfg.network && ip != s.cfg.network && ip != s.cfg.bcast
}

// clientKey returns the client's identity: option 61 when present, else htype
// and chaddr. The result aliases s.keyBuf.
func (s *Server) clientKey(m *message) []byte {
	if id, ok := m.opt(optClientID); ok {
		s.keyBuf[0] = 'C'
		n := copy(s.keyBuf[1:], id)
		return s.keyBuf[:1+n]
	}
	s.keyBuf[0] = 'H'
	s.keyBuf[1] = m.htype
	n := copy(s.keyBuf[2:], m.chaddr[:m.hlen])
	return s.keyBuf[:2+n]
}

// request is one decoded client message with what the handlers share.
type request struct {
	fi       *frameInfo
	m        *message
	key      []byte
	chaddr   [ethAddrLen]byte
	res      reservation
	reserved bool
	now      time.Duration
	out      []byte
}

func (s *Server) handle(frame, out []byte) ([]byte, Verdict) {
	fi := &s.fi
	if v := parseFrame(frame, &s.filter, fi); v != verdictNone {
		return nil, v
	}
	now := s.now()
	if s.limiter != nil && !s.limiter.allow(fi.src, now) {
		return nil, DropRateLimited
	}
	m := s.msg
	if v := m.decode(fi.payload, bootRequest); v != verdictNone {
		return nil, v
	}
	if m.htype != htypeEthernet {
		return nil, DropBOOTPHtype
	}
	r := request{fi: fi, m: m, now: now, out: out}
	copy(r.chaddr[:], m.chaddr[:ethAddrLen])
	if !s.cfg.allowAny && (!s.cfg.allowed[r.chaddr] || !s.cfg.allowed[fi.src]) {
		return nil, DropMACNotAllowed
	}
	if m.giaddr != 0 {
		if !s.inSubnet(m.giaddr) {
			return nil, DropRelay
		}
		if fi.srcPort != portServer {
			return nil, DropUDPSrcPort
		}
	} else if fi.srcPort != portClient {
		return nil, DropUDPSrcPort
	}
	if !m.has(optMessageType) {
		return nil, DropNoMessageType
	}
	r.key = s.clientKey(m)
	r.res, r.reserved = s.cfg.reservations[r.chaddr]
	switch m.msgType() {
	case msgDiscover:
		s.counts[cRxDiscover]++
		return s.discover(&r)
	case msgRequest:
		s.counts[cRxRequest]++
		return s.request(&r)
	case msgDecline:
		s.counts[cRxDecline]++
		return s.decline(&r)
	case msgRelease:
		s.counts[cRxRelease]++
		return s.release(&r)
	case msgInform:
		s.counts[cRxInform]++
		return s.inform(&r)
	}
	return nil, DropMessageType
}

func (s *Server) discover(r *request) ([]byte, Verdict) {
	secs := s.grantedLease(r.m)
	spec := replySpec{typ: msgOffer, leaseSecs: secs, withLease: true}
	switch i := s.table.lookup(r.key); {
	case r.reserved:
		spec.yiaddr, spec.hostname = r.res.ip, r.res.hostname
	case i >= 0:
		l := &s.table.slots[i]
		if l.state != stateBound || !l.live(r.now) {
			l.state, l.expiry = stateOffered, addSat(r.now, s.cfg.offerHold)
		}
		l.touched = r.now
		spec.yiaddr = l.ip
	default:
		prefer, _ := r.m.optU32(optRequestedIP)
		ip, ok := s.table.pickAddress(prefer, r.now)
		if !ok {
			s.logEvent(slog.LevelWarn, "dhcp: pool exhausted", r)
			return nil, DropPoolExhausted
		}
		if _, v := s.table.create(r.key, r.fi.src, ip, stateOffered, addSat(r.now, s.cfg.offerHold), r.now); v != verdictNone {
			return nil, v
		}
		spec.yiaddr = ip
	}
	s.syncEvictions()
	s.logLease("dhcp: offer", r, spec.yiaddr)
	return s.buildReply(r.out, r.fi, r.m, &spec), VerdictOffer
}

func (s *Server) request(r *request) ([]byte, Verdict) {
	m := r.m
	sid, hasSID := m.optU32(optServerID)
	reqIP, hasReq := m.optU32(optRequestedIP)
	if hasSID && sid != s.cfg.serverIP {
		// SELECTING another server's offer: let ours go (RFC 2131 4.3.2).
		if i := s.table.lookup(r.key); i >= 0 && s.table.slots[i].state == stateOffered {
			s.table.slots[i].state = stateReleased
			s.table.slots[i].touched = r.now
		}
		return nil, VerdictOtherServer
	}
	var ip uint32
	initReboot := false
	switch {
	case hasSID:
		s.counts[cRequestSelecting]++
		if !hasReq {
			return nil, DropBadRequest
		}
		ip = reqIP
	case m.ciaddr == 0:
		s.counts[cRequestInitReboot]++
		if !hasReq {
			return nil, DropBadRequest
		}
		ip, initReboot = reqIP, true
	case r.fi.ipDst == s.cfg.serverIP:
		s.counts[cRequestRenewing]++
		ip = m.ciaddr
	default:
		s.counts[cRequestRebinding]++
		ip = m.ciaddr
	}
	nak := func() ([]byte, Verdict) {
		s.syncEvictions()
		s.logLease("dhcp: nak", r, ip)
		return s.buildReply(r.out, r.fi, m, &replySpec{typ: msgNak}), VerdictNak
	}
	if !hasSID {
		// INIT-REBOOT, RENEWING, REBINDING: the client asserts an address it
		// believes it holds (RFC 2131 4.3.2). An address on the wrong network
		// is NAKed (INIT-REBOOT: SHOULD); a client with no record gets no
		// reply, since another server on the link may hold its lease, unless
		// this server is authoritative for the subnet; a known client whose
		// notion is incorrect is NAKed. Never an ACK without a record.
		recorded, known := s.recordedAddress(r)
		switch {
		case initReboot && !s.inSubnet(ip):
			return nak()
		case !known && !s.cfg.authoritative:
			s.logAttrs(slog.LevelDebug, "dhcp: request from a client with no record ignored", r, slog.String("ip", addr4(ip).String()))
			return nil, VerdictUnknownClient
		case !known || recorded != ip:
			return nak()
		}
	}
	secs := s.grantedLease(m)
	if !s.bind(r, ip, secs) {
		return nak()
	}
	s.syncEvictions()
	spec := replySpec{typ: msgAck, yiaddr: ip, ciaddr: m.ciaddr, leaseSecs: secs, withLease: true}
	if r.reserved {
		spec.hostname = r.res.hostname
	}
	s.logLease("dhcp: ack", r, ip)
	return s.buildReply(r.out, r.fi, m, &spec), VerdictAck
}

// recordedAddress returns the address the server has on record for the
// client and whether it has one. A reservation is the reserved client's
// record of its fixed address (it holds no table record): the client is
// known, and asserting any other address is incorrect (RFC 2131 4.3.2).
// A table record counts in any state, released and expired included: it
// still owns its address, which nobody else can have been given.
func (s *Server) recordedAddress(r *request) (uint32, bool) {
	if r.reserved {
		return r.res.ip, true
	}
	if i := s.table.lookup(r.key); i >= 0 {
		return s.table.slots[i].ip, true
	}
	return 0, false
}

// bind leases ip to the client if it may have it and reports whether it did.
func (s *Server) bind(r *request, ip, secs uint32) bool {
	if r.reserved {
		return ip == r.res.ip
	}
	expiry := leaseExpiry(r.now, secs)
	if i := s.table.lookup(r.key); i >= 0 {
		l := &s.table.slots[i]
		if l.ip != ip {
			return false
		}
		l.state, l.expiry, l.touched = stateBound, expiry, r.now
		return true
	}
	p, ok := s.table.poolIndex(ip)
	if !ok || !s.table.addressAvailable(p, r.now) {
		return false
	}
	_, v := s.table.create(r.key, r.fi.src, ip, stateBound, expiry, r.now)
	return v == verdictNone
}

// ourServerID checks option 54, which DECLINE and RELEASE must carry.
func (s *Server) ourServerID(m *message) Verdict {
	sid, ok := m.optU32(optServerID)
	switch {
	case !ok:
		return DropBadRequest
	case sid != s.cfg.serverIP:
		return VerdictOtherServer
	}
	return verdictNone
}

func (s *Server) decline(r *request) ([]byte, Verdict) {
	if v := s.ourServerID(r.m); v != verdictNone {
		return nil, v
	}
	ip, ok := r.m.optU32(optRequestedIP)
	if !ok {
		return nil, DropBadRequest
	}
	if r.reserved {
		if ip != r.res.ip {
			return nil, DropNotLeased
		}
		s.logLease("dhcp: reserved address declined (in use by another host?)", r, ip)
		return nil, VerdictDecline
	}
	i := s.table.lookup(r.key)
	if i < 0 || s.table.slots[i].ip != ip || (s.table.slots[i].state != stateBound && s.table.slots[i].state != stateOffered) {
		return nil, DropNotLeased
	}
	s.table.quarantine(i, addSat(r.now, s.cfg.declineHold), r.now)
	s.logLease("dhcp: address declined, quarantined", r, ip)
	return nil, VerdictDecline
}

func (s *Server) release(r *request) ([]byte, Verdict) {
	if v := s.ourServerID(r.m); v != verdictNone {
		return nil, v
	}
	ip := r.m.ciaddr
	if ip == 0 {
		return nil, DropBadRequest
	}
	if r.reserved {
		if ip != r.res.ip {
			return nil, DropNotLeased
		}
		s.logLease("dhcp: release", r, ip)
		return nil, VerdictRelease
	}
	i := s.table.lookup(r.key)
	if i < 0 || s.table.slots[i].ip != ip || s.table.slots[i].state != stateBound {
		return nil, DropNotLeased
	}
	s.table.slots[i].state = stateReleased
	s.table.slots[i].touched = r.now
	s.logLease("dhcp: release", r, ip)
	return nil, VerdictRelease
}

func (s *Server) inform(r *request) ([]byte, Verdict) {
	if r.m.ciaddr == 0 {
		return nil, DropBadRequest
	}
	spec := replySpec{typ: msgAck, ciaddr: r.m.ciaddr}
	if r.reserved {
		spec.hostname = r.res.hostname
	}
	return s.buildReply(r.out, r.fi, r.m, &spec), VerdictAck
}

// syncEvictions moves the table's eviction count into the counters.
func (s *Server) syncEvictions() {
	s.counts[cLeaseEvictions] = s.table.evictions
}

// logDrop logs a dropped frame at debug level. The frame's source MAC is
// printed from bytes; nothing guest-controlled is printed as text.
func (s *Server) logDrop(v Verdict, frame []byte) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{slog.String("reason", v.String()), slog.Int("len", len(frame))}
	if len(frame) >= ethHeaderLen {
		attrs = append(attrs, slog.String("src_mac", net.HardwareAddr(frame[ethSrcOff:ethSrcOff+ethAddrLen]).String()))
	}
	s.log.LogAttrs(ctx, slog.LevelDebug, "dhcp: frame dropped", attrs...)
}

// logLease logs a lease event at info level.
func (s *Server) logLease(msg string, r *request, ip uint32) {
	if !s.log.Enabled(context.Background(), slog.LevelInfo) {
		return // before building attributes, which allocate
	}
	s.logAttrs(slog.LevelInfo, msg, r, slog.String("ip", addr4(ip).String()))
}

// logEvent logs msg about request r.
func (s *Server) logEvent(level slog.Level, msg string, r *request) {
	s.logAttrs(level, msg, r)
}

func (s *Server) logAttrs(level slog.Level, msg string, r *request, extra ...slog.Attr) {
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := append(extra,
		slog.String("chaddr", net.HardwareAddr(r.chaddr[:]).String()),
		slog.String("client", keyString(string(r.key))),
		slog.String("xid", fmt.Sprintf("%#08x", r.m.xid)))
	if h, ok := r.m.opt(optHostName); ok {
		attrs = append(attrs, slog.String("client_hostname", guestString(h)))
	}
	if vc, ok := r.m.opt(optVendorClass); ok {
		attrs = append(attrs, slog.String("vendor_class", guestString(vc)))
	}
	s.log.LogAttrs(ctx, level, msg, attrs...)
}

// maxLoggedGuestString bounds how much of a guest-supplied string is logged.
const maxLoggedGuestString = 64

// guestString renders guest-controlled bytes for a log: printable ASCII other
// than backslash and quotes as is, everything else as \xNN, at most
// maxLoggedGuestString input bytes (then "...").
func guestString(b []byte) string {
	const hex = "0123456789abcdef"
	out := make([]byte, 0, len(b)+8)
	for i, c := range b {
		if i == maxLoggedGuestString {
			return string(append(out, "..."...))
		}
		if c >= 0x20 && c < 0x7f && c != '\\' && c != '"' && c != '\'' {
			out = append(out, c)
			continue
		}
		out = append(out, '\\', 'x', hex[c>>4], hex[c&15])
	}
	return string(out)
}
