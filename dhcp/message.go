package dhcp

import "encoding/binary"

// BOOTP fixed header layout (RFC 2131 figure 1).
const (
	bootpOpOff     = 0
	bootpHtypeOff  = 1
	bootpHlenOff   = 2
	bootpHopsOff   = 3
	bootpXidOff    = 4
	bootpSecsOff   = 8
	bootpFlagsOff  = 10
	bootpCiaddrOff = 12
	bootpYiaddrOff = 16
	bootpSiaddrOff = 20
	bootpGiaddrOff = 24
	bootpChaddrOff = 28
	bootpChaddrLen = 16
	bootpSnameOff  = 44
	bootpSnameLen  = 64
	bootpFileOff   = 108
	bootpFileLen   = 128
	bootpCookieOff = 236
	bootpOptOff    = 240 // first option byte, after the magic cookie
	bootpMinLen    = 300 // RFC 951 minimum BOOTP message

	magicCookie   = 0x63825363
	bootRequest   = 1
	bootReply     = 2
	htypeEthernet = 1
	flagBroadcast = 0x8000
	maxHlen       = 16
)

// maxSegments bounds how many option fragments one message may carry (all of
// options, file and sname together). Real clients send a few dozen.
const maxSegments = 256

// segment is one option occurrence inside the packet.
type segment struct {
	off  int // offset of the option's data in the packet
	n    uint8
	code uint8
}

// message is a decoded BOOTP/DHCP message. Option values alias the packet or
// the decoder's scratch buffer and are valid until the next decode.
type message struct {
	op, htype, hlen, hops byte
	xid                   uint32
	secs, flags           uint16
	ciaddr, yiaddr        uint32
	siaddr, giaddr        uint32
	chaddr                [bootpChaddrLen]byte
	overload              byte

	present [4]uint64   // bitmap of option codes present
	vals    [256][]byte // concatenated option values (RFC 3396), valid when present
	count   [256]uint16 // occurrences of each code in segs
	segs    [maxSegments]segment
	nseg    int
	scratch []byte // holds concatenations of split options
}

func newMessage() *message {
	// scratch grows (bounded by the largest datagram) only for split options.
	return &message{scratch: make([]byte, 0, 1024)}
}

// has reports whether option code was present.
func (m *message) has(code byte) bool { return m.present[code>>6]&(1<<(code&63)) != 0 }

// opt returns option code's value (concatenated when it was split).
func (m *message) opt(code byte) ([]byte, bool) {
	if !m.has(code) {
		return nil, false
	}
	return m.vals[code], true
}

// optU32 returns a 4-byte option as an integer (lengths were checked by decode).
func (m *message) optU32(code byte) (uint32, bool) {
	v, ok := m.opt(code)
	if !ok || len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// msgType returns option 53 or 0 when absent.
func (m *message) msgType() byte {
	if v, ok := m.opt(optMessageType); ok && len(v) == 1 {
		return v[0]
	}
	return 0
}

// requested reports whether the client listed code in its parameter request list.
func (m *message) requested(code byte) bool {
	prl, _ := m.opt(optParamRequestList)
	for _, c := range prl {
		if c == code {
			return true
		}
	}
	return false
}

// decode parses a BOOTP/DHCP message whose op must be wantOp. It returns
// verdictNone on success or the drop verdict naming the first defect. It
// reads only inside b and never keeps a partial result: on failure nothing in
// m is meaningful.
func (m *message) decode(b []byte, wantOp byte) Verdict {
	m.present = [4]uint64{}
	m.nseg = 0
	m.overload = 0
	m.scratch = m.scratch[:0]
	if len(b) < bootpOptOff {
		return DropBOOTPShort
	}
	m.op = b[bootpOpOff]
	if m.op != wantOp {
		return DropBOOTPOp
	}
	m.htype, m.hlen, m.hops = b[bootpHtypeOff], b[bootpHlenOff], b[bootpHopsOff]
	if m.hlen > maxHlen || (m.htype == htypeEthernet && m.hlen != ethAddrLen) {
		return DropBOOTPHlen
	}
	if binary.BigEndian.Uint32(b[bootpCookieOff:]) != magicCookie {
		return DropMagicCookie
	}
	m.xid = binary.BigEndian.Uint32(b[bootpXidOff:])
	m.secs = binary.BigEndian.Uint16(b[bootpSecsOff:])
	m.flags = binary.BigEndian.Uint16(b[bootpFlagsOff:])
	m.ciaddr = binary.BigEndian.Uint32(b[bootpCiaddrOff:])
	m.yiaddr = binary.BigEndian.Uint32(b[bootpYiaddrOff:])
	m.siaddr = binary.BigEndian.Uint32(b[bootpSiaddrOff:])
	m.giaddr = binary.BigEndian.Uint32(b[bootpGiaddrOff:])
	copy(m.chaddr[:], b[bootpChaddrOff:bootpChaddrOff+bootpChaddrLen])

	if v := m.walk(b, bootpOptOff, len(b), true); v != verdictNone {
		return v
	}
	// Option 52 may appear only in the options field (checked by walk) and,
	// after concatenation, must be one byte naming file, sname or both.
	ovl := -1
	for i := 0; i < m.nseg; i++ {
		s := m.segs[i]
		if s.code != optOverload {
			continue
		}
		if ovl != -1 || s.n != 1 {
			return DropOptionOverload
		}
		ovl = i
	}
	if ovl != -1 {
		m.overload = b[m.segs[ovl].off]
		if m.overload < overloadFile || m.overload > overloadBoth {
			return DropOptionOverload
		}
		// RFC 3396 section 5: options, then file, then sname. Each is walked
		// once; option 52 inside them is refused, so there is no loop.
		if m.overload&overloadFile != 0 {
			if v := m.walk(b, bootpFileOff, bootpFileOff+bootpFileLen, false); v != verdictNone {
				return v
			}
		}
		if m.overload&overloadSname != 0 {
			if v := m.walk(b, bootpSnameOff, bootpSnameOff+bootpSnameLen, false); v != verdictNone {
				return v
			}
		}
	}
	return m.assemble(b)
}

// walk records the options in b[start:end], which must end with END.
func (m *message) walk(b []byte, start, end int, optionsField bool) Verdict {
	i := start
	for {
		if i >= end {
			return DropOptionMissingEnd
		}
		code := b[i]
		switch code {
		case optPad:
			i++
			continue
		case optEnd:
			return verdictNone
		}
		if i+1 >= end {
			return DropOptionOverrun
		}
		n := int(b[i+1])
		if n > end-i-2 {
			return DropOptionOverrun
		}
		if code == optOverload && !optionsField {
			return DropOptionOverload
		}
		if m.nseg == maxSegments {
			return DropOptionCount
		}
		m.segs[m.nseg] = segment{off: i + 2, n: uint8(n), code: code}
		m.nseg++
		i += 2 + n
	}
}

// assemble fills vals, concatenating repeated options in order of appearance
// (RFC 3396), and checks each value's length.
func (m *message) assemble(b []byte) Verdict {
	for i := 0; i < m.nseg; i++ {
		m.count[m.segs[i].code] = 0
	}
	for i := 0; i < m.nseg; i++ {
		m.count[m.segs[i].code]++
	}
	for i := 0; i < m.nseg; i++ {
		s := m.segs[i]
		c := s.code
		if m.has(c) {
			continue // already assembled from its first segment
		}
		m.present[c>>6] |= 1 << (c & 63)
		if m.count[c] == 1 {
			m.vals[c] = b[s.off : s.off+int(s.n) : s.off+int(s.n)]
		} else {
			start := len(m.scratch)
			for j := i; j < m.nseg; j++ {
				if t := m.segs[j]; t.code == c {
					m.scratch = append(m.scratch, b[t.off:t.off+int(t.n)]...)
				}
			}
			m.vals[c] = m.scratch[start:len(m.scratch):len(m.scratch)]
		}
		if !optionLengthOK(c, len(m.vals[c])) {
			return DropOptionLength
		}
	}
	return verdictNone
}
