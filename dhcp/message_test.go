package dhcp

import (
	"bytes"
	"net/netip"
	"testing"
)

// withOverload builds a DISCOVER whose options field carries option 52 = ovl
// and whose file and sname fields hold fileOpts and snameOpts.
func withOverload(opts, fileOpts, snameOpts []byte) []byte {
	b := rawMessage(1, 1, 6, nicMAC, opts)
	copy(b[bootpFileOff:bootpFileOff+bootpFileLen], fileOpts)
	copy(b[bootpSnameOff:bootpSnameOff+bootpSnameLen], snameOpts)
	return b
}

func TestDecodeRefusals(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    Verdict
	}{
		{"minimal DISCOVER", rawMessage(1, 1, 6, nicMAC, discoverOpts()), VerdictOffer},
		{"pads before and between options", rawMessage(1, 1, 6, nicMAC, []byte{0, 0, 53, 1, 1, 0, 0, 255}), VerdictOffer},
		{"garbage after END is ignored", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 1, 255, 1, 200, 7}), VerdictOffer},
		{"239 bytes", rawMessage(1, 1, 6, nicMAC, nil)[:239], DropBOOTPShort},
		{"no options at all", rawMessage(1, 1, 6, nicMAC, nil)[:240], DropOptionMissingEnd},
		{"op BOOTREPLY", rawMessage(2, 1, 6, nicMAC, discoverOpts()), DropBOOTPOp},
		{"op 0", rawMessage(0, 1, 6, nicMAC, discoverOpts()), DropBOOTPOp},
		{"op 255", rawMessage(255, 1, 6, nicMAC, discoverOpts()), DropBOOTPOp},
		{"hlen 255", rawMessage(1, 1, 255, nicMAC, discoverOpts()), DropBOOTPHlen},
		{"hlen 17 other htype", rawMessage(1, 6, 17, nicMAC, discoverOpts()), DropBOOTPHlen},
		{"hlen 16 other htype", rawMessage(1, 6, 16, nicMAC, discoverOpts()), DropBOOTPHtype},
		{"Ethernet hlen 0", rawMessage(1, 1, 0, nicMAC, discoverOpts()), DropBOOTPHlen},
		{"Ethernet hlen 16", rawMessage(1, 1, 16, nicMAC, discoverOpts()), DropBOOTPHlen},
		{"bad cookie", func() []byte { b := rawMessage(1, 1, 6, nicMAC, discoverOpts()); b[239] = 0x64; return b }(), DropMagicCookie},
		{"missing END", func() []byte {
			b := rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 1})
			for i := 243; i < len(b); i++ {
				b[i] = 0 // pads to the end, no END
			}
			return b
		}(), DropOptionMissingEnd},
		{"length byte missing at end", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 1, 12})[:244], DropOptionOverrun},
		{"length past end", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 1, 12, 200, 'a'})[:246], DropOptionOverrun},
		{"zero-length message type", rawMessage(1, 1, 6, nicMAC, []byte{53, 0, 255}), DropOptionLength},
		{"message type length 2", rawMessage(1, 1, 6, nicMAC, []byte{53, 2, 1, 1, 255}), DropOptionLength},
		{"zero-length host name", rawMessage(1, 1, 6, nicMAC, discoverOpts(12, 0)), DropOptionLength},
		{"zero-length parameter list", rawMessage(1, 1, 6, nicMAC, discoverOpts(55, 0)), DropOptionLength},
		{"zero-length client id", rawMessage(1, 1, 6, nicMAC, discoverOpts(61, 0)), DropOptionLength},
		{"one-byte client id", rawMessage(1, 1, 6, nicMAC, discoverOpts(61, 1, 1)), VerdictOffer},
		{"requested IP length 3", rawMessage(1, 1, 6, nicMAC, discoverOpts(50, 3, 10, 0, 2)), DropOptionLength},
		{"server id length 0", rawMessage(1, 1, 6, nicMAC, discoverOpts(54, 0)), DropOptionLength},
		{"lease time length 1", rawMessage(1, 1, 6, nicMAC, discoverOpts(51, 1, 9)), DropOptionLength},
		{"subnet mask length 255", rawMessage(1, 1, 6, nicMAC, discoverOpts(append([]byte{1, 255}, make([]byte, 255)...)...)), DropOptionLength},
		{"router length 5", rawMessage(1, 1, 6, nicMAC, discoverOpts(3, 5, 1, 2, 3, 4, 5)), DropOptionLength},
		{"max size length 1", rawMessage(1, 1, 6, nicMAC, discoverOpts(57, 1, 2)), DropOptionLength},
		{"unknown option zero length ok", rawMessage(1, 1, 6, nicMAC, discoverOpts(80, 0, 224, 0)), VerdictOffer},
		{"no message type", rawMessage(1, 1, 6, nicMAC, []byte{12, 1, 'x', 255}), DropNoMessageType},
		{"message type OFFER", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 2, 255}), DropMessageType},
		{"message type ACK", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 5, 255}), DropMessageType},
		{"message type 0", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 0, 255}), DropMessageType},
		{"message type 13 (leasequery active)", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 13, 255}), DropMessageType},
		{"message type split into two options", rawMessage(1, 1, 6, nicMAC, []byte{53, 1, 1, 53, 1, 1, 255}), DropOptionLength},
		{"257 option fragments", rawMessage(1, 1, 6, nicMAC, append(bytes.Repeat([]byte{224, 0}, 257), 53, 1, 1, 255)), DropOptionCount},
		{"256 option fragments ok", rawMessage(1, 1, 6, nicMAC, append(bytes.Repeat([]byte{224, 0}, 255), 53, 1, 1, 255)), VerdictOffer},

		// Option overload (52).
		{"overload file", withOverload([]byte{52, 1, 1, 255}, []byte{53, 1, 1, 255}, nil), VerdictOffer},
		{"overload sname", withOverload([]byte{52, 1, 2, 255}, nil, []byte{53, 1, 1, 255}), VerdictOffer},
		{"overload both", withOverload([]byte{52, 1, 3, 255}, []byte{53, 1, 1, 255}, []byte{12, 1, 'h', 255}), VerdictOffer},
		{"overload 0", withOverload([]byte{52, 1, 0, 53, 1, 1, 255}, nil, nil), DropOptionOverload},
		{"overload 4", withOverload([]byte{52, 1, 4, 53, 1, 1, 255}, nil, nil), DropOptionOverload},
		{"overload length 0", withOverload([]byte{52, 0, 53, 1, 1, 255}, nil, nil), DropOptionOverload},
		{"overload length 2", withOverload([]byte{52, 2, 1, 1, 53, 1, 1, 255}, nil, nil), DropOptionOverload},
		{"overload twice", withOverload([]byte{52, 1, 1, 52, 1, 1, 53, 1, 1, 255}, []byte{255}, nil), DropOptionOverload},
		{"overload inside file (loop)", withOverload([]byte{52, 1, 1, 53, 1, 1, 255}, []byte{52, 1, 1, 255}, nil), DropOptionOverload},
		{"overload inside sname (loop)", withOverload([]byte{52, 1, 3, 53, 1, 1, 255}, []byte{255}, []byte{52, 1, 2, 255}), DropOptionOverload},
		{"overloaded file without END", withOverload([]byte{52, 1, 1, 53, 1, 1, 255}, bytes.Repeat([]byte{0}, 128), nil), DropOptionMissingEnd},
		{"overloaded sname option overruns", withOverload([]byte{52, 1, 2, 53, 1, 1, 255}, nil, append(make([]byte, 60), 12, 10, 'a', 'b')), DropOptionOverrun},
		{"overloaded file option overruns into sname-free area", withOverload([]byte{52, 1, 1, 53, 1, 1, 255}, append(make([]byte, 126), 12, 5), nil), DropOptionOverrun},
		{"file not overloaded is ignored", withOverload([]byte{53, 1, 1, 255}, []byte{52, 1, 1, 0xff, 0xff}, nil), VerdictOffer},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := newTestServer(t, nil)
			c := newClient(t, s, nicMAC)
			v, _ := c.sendFrame(clientFrame(tc.payload).bytes())
			if v != tc.want {
				t.Fatalf("verdict %v, want %v", v, tc.want)
			}
			if got := s.Counters().Get(tc.want); got != 1 {
				t.Fatalf("counter %v = %d", tc.want, got)
			}
		})
	}
}

// RFC 3396: repeated options are concatenated in order, across options,
// file and sname (in that order).
func TestDecodeConcatenation(t *testing.T) {
	opts := []byte{52, 1, 3, 53, 1, 1, 12, 2, 'a', 'b', 61, 2, 1, 2, 12, 1, 'c', 255}
	file := []byte{12, 2, 'd', 'e', 61, 3, 3, 4, 5, 255}
	sname := []byte{0, 0, 12, 1, 'f', 255}
	m := newMessage()
	if v := m.decode(withOverload(opts, file, sname), bootRequest); v != verdictNone {
		t.Fatalf("decode: %v", v)
	}
	if h, _ := m.opt(optHostName); string(h) != "abcdef" {
		t.Errorf("host name %q, want abcdef", h)
	}
	if id, _ := m.opt(optClientID); !bytes.Equal(id, []byte{1, 2, 3, 4, 5}) {
		t.Errorf("client id % x", id)
	}
	if m.msgType() != msgDiscover || m.overload != overloadBoth {
		t.Errorf("type %d overload %d", m.msgType(), m.overload)
	}
	// Decoding again starts from scratch: nothing leaks from the last message.
	if v := m.decode(rawMessage(1, 1, 6, nicMAC, discoverOpts()), bootRequest); v != verdictNone {
		t.Fatal(v)
	}
	if m.has(optHostName) || m.has(optClientID) || m.overload != 0 {
		t.Error("options from the previous message survived")
	}
	// A split option whose parts are each valid can still be refused as a whole.
	if v := m.decode(rawMessage(1, 1, 6, nicMAC, discoverOpts(50, 2, 10, 0, 50, 3, 2, 15, 9)), bootRequest); v != DropOptionLength {
		t.Errorf("requested IP split 2+3 bytes: %v", v)
	}
	// Split into 2+2 it is a valid 4-byte address.
	if v := m.decode(rawMessage(1, 1, 6, nicMAC, discoverOpts(50, 2, 10, 0, 50, 2, 2, 15)), bootRequest); v != verdictNone {
		t.Fatalf("requested IP split 2+2: %v", v)
	}
	if ip, ok := m.optU32(optRequestedIP); !ok || ip != 0x0a00020f {
		t.Errorf("requested IP %#x", ip)
	}
}

// A reply built by the encoder decodes back to the same fields and options.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) {
		c.Reservations = []Reservation{{MAC: nicMAC, IP: netip.MustParseAddr("10.0.2.50"), Hostname: "guest-1"}}
	})
	req := rawMessage(1, 1, 6, nicMAC, discoverOpts(61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 55, 1, 121))
	out, v := s.HandleFrame(clientFrame(req).bytes(), nil)
	if v != VerdictOffer {
		t.Fatal(v)
	}
	var fi frameInfo
	f := frameFilter{serverMAC: [6]byte(nicMAC), serverIP: 0x0a000232, subnetBC: 0x0a0002ff}
	if v := parseFrame(out, &f, &fi); v != VerdictNotDHCP {
		t.Fatalf("reply frame is to port 68, parseFrame said %v", v) // our parser only accepts port 67
	}
	r, err := parseReply(out)
	if err != nil {
		t.Fatal(err)
	}
	m := newMessage()
	if v := m.decode(r.payload, bootReply); v != verdictNone {
		t.Fatalf("decode own reply: %v", v)
	}
	if m.yiaddr != 0x0a000232 || m.xid != 0xcafe0001 || !bytes.Equal(m.chaddr[:6], nicMAC) || m.htype != 1 || m.hlen != 6 {
		t.Errorf("fields: yiaddr %#x xid %#x chaddr % x", m.yiaddr, m.xid, m.chaddr)
	}
	if h, _ := m.opt(optHostName); string(h) != "guest-1" {
		t.Errorf("host name %q", h)
	}
	if id, _ := m.opt(optClientID); !bytes.Equal(id, []byte{1, 0x52, 0x54, 0, 0x12, 0x34, 0x56}) {
		t.Errorf("client id not echoed: % x", id)
	}
	if m.msgType() != msgOffer {
		t.Errorf("type %d", m.msgType())
	}
	// The oracle agrees option by option.
	for code, val := range r.msg.Options {
		got, ok := m.opt(byte(code))
		if !ok || !bytes.Equal(got, val) {
			t.Errorf("option %d: ours % x, oracle % x", code, got, val)
		}
	}
}

// The encoder splits long values (RFC 3396) and never writes past its buffer.
func TestEncoderBounds(t *testing.T) {
	for size := 0; size < 700; size += 7 {
		buf := make([]byte, size+16)
		for i := range buf {
			buf[i] = 0xee
		}
		e := encoder{b: buf[:size]}
		val := bytes.Repeat([]byte{0x42}, 600)
		e.option(121, val)
		e.option(6, val[:8])
		e.optionU32(51, 7)
		e.end()
		if e.n > size {
			t.Fatalf("size %d: wrote %d bytes", size, e.n)
		}
		for i := size; i < len(buf); i++ {
			if buf[i] != 0xee {
				t.Fatalf("size %d: byte %d past the buffer was written", size, i)
			}
		}
		if size > 0 && buf[e.n-1] != optEnd {
			t.Fatalf("size %d: last byte %#x, want END", size, buf[e.n-1])
		}
		// Whatever was written must decode (RFC 3396 concatenation restores the value).
		msg := append(rawMessage(1, 1, 6, nicMAC, nil)[:240], buf[:e.n]...)
		m := newMessage()
		if size > 0 {
			if v := m.decode(msg, bootRequest); v != verdictNone {
				t.Fatalf("size %d: decode: %v", size, v)
			}
			if got, ok := m.opt(121); ok && !bytes.Equal(got, val) {
				t.Fatalf("size %d: split option reassembled to %d bytes", size, len(got))
			}
		}
	}
}
