package dhcp

import (
	"encoding/binary"
	"net"
	"testing"
	"time"
)

// FuzzParseFrame feeds arbitrary bytes to the frame parser and the message
// decoder: neither may panic, read outside the frame, or accept a message
// whose fields contradict the checks.
func FuzzParseFrame(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(s.frame)
	}
	filter := frameFilter{serverMAC: [6]byte(srvMAC), serverIP: 0x0a000202, subnetBC: 0x0a0002ff}
	m := newMessage()
	f.Fuzz(func(t *testing.T, frame []byte) {
		var fi frameInfo
		v := parseFrame(frame, &filter, &fi)
		if v >= numVerdicts {
			t.Fatalf("verdict %d out of range", v)
		}
		if v != verdictNone {
			return
		}
		if len(fi.payload) > len(frame) {
			t.Fatalf("payload of %d bytes from a %d-byte frame", len(fi.payload), len(frame))
		}
		// Tagged frames are never parsed; the payload is exactly what the
		// UDP length says, inside the IPv4 total length.
		if et := binary.BigEndian.Uint16(frame[12:]); et == 0x8100 || et == 0x88a8 || et == 0x9100 {
			t.Fatalf("tagged frame (EtherType %#x) accepted", et)
		}
		ihl := int(frame[14]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(frame[16:]))
		ulen := int(binary.BigEndian.Uint16(frame[14+ihl+4:]))
		if len(fi.payload) != ulen-8 || ulen > total-ihl || &fi.payload[:1][0] != &frame[14+ihl+8] {
			t.Fatalf("payload of %d bytes at the wrong place: UDP length %d, total %d", len(fi.payload), ulen, total)
		}
		dv := m.decode(fi.payload, bootRequest)
		if dv >= numVerdicts {
			t.Fatalf("decode verdict %d out of range", dv)
		}
		if dv != verdictNone {
			return
		}
		if m.op != bootRequest || m.hlen > maxHlen || (m.htype == htypeEthernet && m.hlen != 6) {
			t.Fatalf("accepted op %d htype %d hlen %d", m.op, m.htype, m.hlen)
		}
		for c := 0; c < 256; c++ {
			if v, ok := m.opt(byte(c)); ok && !optionLengthOK(byte(c), len(v)) {
				t.Fatalf("accepted option %d of length %d", c, len(v))
			}
		}
	})
}

// fuzzRecords splits fuzz input into frames. Each record is a control byte,
// a 16-bit length and that many bytes. Control bit 0 recomputes the IPv4
// header checksum and bit 1 the UDP checksum of an untagged frame, so the
// fuzzer reaches the DHCP layer; the high nibble advances the clock by that
// many 7-minute steps (leases are one hour). In the first control byte,
// bit 7 turns on AllowAnyMAC and bit 2 Authoritative.
func fuzzRecords(data []byte, each func(ctl byte, frame []byte)) {
	for len(data) >= 3 {
		ctl := data[0]
		n := int(binary.BigEndian.Uint16(data[1:3]))
		data = data[3:]
		n = min(n, len(data))
		frame := append([]byte(nil), data[:n]...)
		data = data[n:]
		each(ctl, frame)
	}
}

// fixChecksums repairs an untagged IPv4/UDP frame's checksums per ctl.
func fixChecksums(ctl byte, b []byte) {
	if len(b) < 34 || b[12] != 0x08 || b[13] != 0x00 {
		return
	}
	ihl := int(b[14]&0x0f) * 4
	if ihl < 20 || 14+ihl > len(b) {
		return
	}
	if ctl&1 != 0 {
		binary.BigEndian.PutUint16(b[24:], 0)
		binary.BigEndian.PutUint16(b[24:], ^fold(sum16(b[14:14+ihl], 0)))
	}
	total := int(binary.BigEndian.Uint16(b[16:]))
	if ctl&2 != 0 && total >= ihl+8 && 14+total <= len(b) {
		udp := b[14+ihl : 14+total]
		if ulen := int(binary.BigEndian.Uint16(udp[4:])); ulen >= 8 && ulen <= len(udp) {
			udp = udp[:ulen] // the checksum covers exactly the UDP length
		}
		binary.BigEndian.PutUint16(udp[6:], 0)
		src, dst := binary.BigEndian.Uint32(b[26:]), binary.BigEndian.Uint32(b[30:])
		cs := ^fold(sum16(udp, pseudoHeaderSum(src, dst, len(udp))))
		if cs == 0 {
			cs = 0xffff
		}
		binary.BigEndian.PutUint16(udp[6:], cs)
	}
}

// record encodes one frame for FuzzServer with checksums fixed.
func record(ctl byte, frame []byte) []byte {
	b := []byte{ctl, byte(len(frame) >> 8), byte(len(frame))}
	return append(b, frame...)
}

// FuzzServer runs frame sequences through a whole server with a small lease
// table and checks, after every frame: no panic, a valid verdict, a reply
// exactly when the verdict has one, every reply well-formed (own parser and
// the insomniacslk/dhcp oracle), within MTU and the caller's buffer, at least
// the BOOTP minimum, and the lease table consistent and bounded.
func FuzzServer(f *testing.F) {
	for _, s := range seedFrames() {
		f.Add(record(3, s.frame))
	}
	for _, s := range seedSequences() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) { fuzzServerOnce(t, data) })
}

// fuzzServerOnce is FuzzServer's body.
func fuzzServerOnce(t testing.TB, data []byte) {
	{
		clk := &fakeClock{t: time.Duration(1<<32) * time.Second}
		cfg := testConfig(clk)
		cfg.AllowedMACs = append(cfg.AllowedMACs, net.HardwareAddr{2, 0, 0, 0, 0, 2})
		cfg.MaxLeases = 6
		cfg.MaxLeasesPerMAC = 3
		cfg.RatePerSecond, cfg.RateBurst = 1000, 1000
		if len(data) > 0 && data[0]&0x80 != 0 {
			cfg.AllowAnyMAC = true
		}
		if len(data) > 0 && data[0]&0x04 != 0 {
			cfg.Authoritative = true
		}
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		const canary = 0xa5
		buf := make([]byte, s.ReplyBufferSize()+32)
		fuzzRecords(data, func(ctl byte, frame []byte) {
			clk.t += time.Duration(ctl>>4) * 7 * time.Minute
			fixChecksums(ctl, frame)
			for i := range buf {
				buf[i] = canary
			}
			in := append([]byte(nil), frame...)
			out, v := s.HandleFrame(frame, buf[:0:s.ReplyBufferSize()])
			if string(in) != string(frame) {
				t.Fatal("HandleFrame modified its input")
			}
			if v == verdictNone || v >= numVerdicts {
				t.Fatalf("verdict %d", v)
			}
			if (out != nil) != v.HasReply() {
				t.Fatalf("verdict %v with reply %v", v, out != nil)
			}
			for i := s.ReplyBufferSize(); i < len(buf); i++ {
				if buf[i] != canary {
					t.Fatalf("wrote past the reply buffer at %d", i)
				}
			}
			if out != nil {
				checkReply(t, s, v, out)
			}
			if err := s.table.check(); err != nil {
				t.Fatalf("lease table: %v", err)
			}
			if s.table.used() > cfg.MaxLeases {
				t.Fatalf("%d leases, limit %d", s.table.used(), cfg.MaxLeases)
			}
		})
		var sum uint64
		for v := Verdict(1); v < numVerdicts; v++ {
			sum += s.counts[v]
		}
		if s.counts[cFramesIn] != sum {
			t.Fatalf("counters do not add up: %v frames, %v verdicts", s.counts[cFramesIn], sum)
		}
	}
}

// checkReply verifies one reply frame independently.
func checkReply(t testing.TB, s *Server, v Verdict, out []byte) {
	t.Helper()
	if len(out) > s.ReplyBufferSize() {
		t.Fatalf("reply of %d bytes, buffer size %d", len(out), s.ReplyBufferSize())
	}
	r, err := parseReply(out)
	if err != nil {
		t.Fatalf("%v reply malformed: %v\n% x", v, err, out)
	}
	if len(r.payload) < bootpMinLen || len(r.payload)+ipUDPHeaderLen > s.cfg.mtu {
		t.Fatalf("reply DHCP message of %d bytes (MTU %d)", len(r.payload), s.cfg.mtu)
	}
	m := newMessage()
	if dv := m.decode(r.payload, bootReply); dv != verdictNone {
		t.Fatalf("own decoder refuses reply: %v", dv)
	}
	want := map[Verdict]byte{VerdictOffer: msgOffer, VerdictAck: msgAck, VerdictNak: msgNak}[v]
	if m.msgType() != want || byte(r.msg.MessageType()) != want {
		t.Fatalf("verdict %v but message type %d / oracle %v", v, m.msgType(), r.msg.MessageType())
	}
	if r.srcMAC.String() != srvMAC.String() || r.ipSrc != srvIP || r.srcPort != portServer {
		t.Fatalf("reply from %v %v:%d", r.srcMAC, r.ipSrc, r.srcPort)
	}
	// RFC 6842: the request's client identifier (the server's decoder still
	// holds the request) comes back verbatim, whatever the size limit.
	reqID, hasID := s.msg.opt(optClientID)
	if repID, ok := m.opt(optClientID); ok != hasID || string(repID) != string(reqID) {
		t.Fatalf("%v reply client id % x (present %v), request % x (present %v)", v, repID, ok, reqID, hasID)
	}
	if v == VerdictOffer || (v == VerdictAck && m.yiaddr != 0) {
		if !s.inSubnet(m.yiaddr) || m.yiaddr == s.cfg.serverIP {
			t.Fatalf("handed out %v", addr4(m.yiaddr))
		}
	}
}

// FuzzRestoreState restores arbitrary bytes as a lease table. Invariants:
// no panic; a refused state leaves the table empty as it was; an
// accepted one is consistent (RestoreState checks it) and saves into a
// state that restores again.
func FuzzRestoreState(f *testing.F) {
	s, _, _ := leasedServer(f)
	b, err := s.SaveState()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		s, _ := newTestServer(t, nil)
		if err := s.RestoreState(data); err != nil {
			if len(s.Leases()) != 0 {
				t.Fatalf("refused state %v left %d records", err, len(s.Leases()))
			}
			return
		}
		again, err := s.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		s2, _ := newTestServer(t, nil)
		if err := s2.RestoreState(again); err != nil {
			t.Fatalf("saved state of a restored table does not restore: %v", err)
		}
	})
}
