package vsock

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// FuzzHeader: any 44 bytes decode and re-encode to themselves, and Check
// accepts only headers that are safe to act on.
func FuzzHeader(f *testing.F) {
	for _, s := range headerSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, ok := DecodeHeader(b)
		if ok != (len(b) >= HeaderLen) {
			t.Fatalf("DecodeHeader of %d bytes: ok %v", len(b), ok)
		}
		if !ok {
			return
		}
		var out [HeaderLen]byte
		h.Encode(out[:])
		if !bytes.Equal(out[:], b[:HeaderLen]) {
			t.Fatalf("re-encoded % x, want % x", out, b[:HeaderLen])
		}
		avail := uint32(len(b) - HeaderLen)
		v := Check(&h, guestCID, avail)
		_ = h.String() + v.String()
		if v == Accept {
			if h.SrcCID != guestCID || h.DstCID != HostCID {
				t.Fatalf("accepted %v from the wrong CIDs", h)
			}
			if h.Op != OpRST && (h.Len > avail || h.Len > MaxPayload || h.Type != TypeStream || h.Op < OpRequest || h.Op > OpCreditRequest) {
				t.Fatalf("accepted %v with %d payload bytes", h, avail)
			}
		}
	})
}

func headerSeeds() [][]byte {
	enc := func(h Header, payload int) []byte {
		b := make([]byte, HeaderLen+payload)
		h.Encode(b)
		return b
	}
	rw := hdr(OpRW, 1, 2)
	rw.Len = 5
	long := hdr(OpRW, 1, 2)
	long.Len = 100
	seq := hdr(OpRequest, 1, 2)
	seq.Type = TypeSeqpacket
	return [][]byte{
		enc(hdr(OpRequest, 1, 2), 0), enc(rw, 5), enc(long, 10), enc(seq, 0),
		enc(hdr(OpRST, 1, 2), 0), enc(hdr(99, 1, 2), 0), {1, 2, 3},
	}
}

func TestHeaderSeeds(t *testing.T) { testdriver.SeedCorpus(t, "FuzzHeader", headerSeeds()) }

// FuzzDevice input, repeated:
//
//	[0]     ctl: fzSane forces the guest's CIDs, a stream type and an op of
//	        ctl>>5 (0..7); fzRx posts a receive buffer first; fzKeepLen keeps
//	        the raw len field (else len is the payload's length)
//	[1:45]  the header's bytes; ports are taken mod 4
//	[45]    payload length
//	[46:]   payload
//
// The packets go through the real transmit path of a device with a
// listener on host port 1 (a host goroutine reading and writing on what it
// accepts) and host Dials to guest ports 0..3. Well-formed chains must
// never fail the device, and the table must stay within its cap.
const (
	fzSane    = 1 << 0
	fzRx      = 1 << 1
	fzKeepLen = 1 << 2
	fzDial    = 1 << 3
)

func FuzzDevice(f *testing.F) {
	for _, s := range deviceSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g := newGuest(t, gopts{qsize: 256, cfg: Config{MaxConns: 4, Backlog: 2, BufSize: MinBufSize, CloseTimeout: 10 * time.Millisecond}})
		l, err := g.dev.Listen(1)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					c.SetDeadline(time.Now().Add(time.Second))
					c.Write([]byte("hello from the host"))
					io.Copy(io.Discard, c)
					c.Close()
				}()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		packets := 0
		for len(b) >= 46 && packets < 100 {
			ctl := b[0]
			h, _ := DecodeHeader(b[1:45])
			n := int(b[45])
			b = b[46:]
			n = min(n, len(b))
			payload := b[:n]
			b = b[n:]
			h.SrcPort %= 4
			h.DstPort %= 4
			if ctl&fzSane != 0 {
				h.SrcCID, h.DstCID, h.Type, h.Op = guestCID, HostCID, TypeStream, Op(ctl>>5)
			}
			if ctl&fzKeepLen == 0 {
				h.Len = uint32(n)
			}
			if ctl&fzRx != 0 {
				g.postRx(1)
			}
			if ctl&fzDial != 0 {
				go func(port uint32) {
					if c, err := g.dev.Dial(ctx, port); err == nil {
						c.Write([]byte("dialed"))
						c.Close()
					}
				}(h.DstPort)
			}
			var raw [HeaderLen]byte
			h.Encode(raw[:])
			g.sendRaw(raw[:], payload)
			packets++
		}
		g.postRx(200 - len(g.rxBufs))
		g.waitTxDone()
		if f := g.failures(); len(f) > 0 {
			t.Fatalf("well-formed chains failed the device: %v", f)
		}
		if c := g.counters(); c.Conns > 4 || c.TxPackets != uint64(packets) {
			t.Fatalf("counters %+v after %d packets", c, packets)
		}
	})
}

func deviceSeeds() [][]byte {
	pkt := func(ctl byte, h Header, payload []byte) []byte {
		b := []byte{ctl}
		var raw [HeaderLen]byte
		h.Encode(raw[:])
		b = append(b, raw[:]...)
		b = append(b, byte(len(payload)))
		return append(b, payload...)
	}
	sane := func(op Op) byte { return fzSane | fzRx | byte(op)<<5 }
	cat := func(ps ...[]byte) []byte { return bytes.Join(ps, nil) }
	sh := hdr(OpShutdown, 2, 1)
	sh.Flags = shutdownBoth
	lie := hdr(OpCreditUpdate, 2, 1)
	lie.FwdCnt = 1 << 30
	big := hdr(OpRW, 2, 1)
	big.Len = 1 << 20
	return [][]byte{
		cat(pkt(sane(OpRequest), hdr(OpRequest, 2, 1), nil), pkt(sane(OpRW), hdr(OpRW, 2, 1), []byte("data")), pkt(sane(OpShutdown), sh, nil)),
		cat(pkt(sane(OpRequest), hdr(OpRequest, 2, 1), nil), pkt(sane(OpCreditUpdate), lie, nil), pkt(sane(OpCreditRequest), hdr(OpCreditRequest, 2, 1), nil), pkt(sane(OpRST), hdr(OpRST, 2, 1), nil)),
		cat(pkt(fzRx|fzKeepLen, big, []byte("x")), pkt(0, hdr(OpRW, 3, 3), nil), pkt(fzRx, hdr(9, 1, 1), nil)),
		cat(pkt(fzDial|fzRx, hdr(OpResponse, 0, 0), nil), pkt(sane(OpResponse)|fzDial, hdr(OpResponse, 1, 0), nil), pkt(sane(OpRW), hdr(OpRW, 1, 0), bytes.Repeat([]byte{7}, 200))),
		cat(pkt(sane(OpRequest), hdr(OpRequest, 0, 1), nil), pkt(sane(OpRequest), hdr(OpRequest, 1, 1), nil), pkt(sane(OpRequest), hdr(OpRequest, 2, 1), nil), pkt(sane(OpRequest), hdr(OpRequest, 3, 1), nil), pkt(sane(OpRequest), hdr(OpRequest, 3, 2), nil)),
	}
}

func TestDeviceSeeds(t *testing.T) { testdriver.SeedCorpus(t, "FuzzDevice", deviceSeeds()) }

// FuzzParseConnect: the hybrid request line never panics and accepts only
// what re-formats to itself.
func FuzzParseConnect(f *testing.F) {
	for _, s := range connectSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseConnect(string(b))
		if err == nil && !bytes.HasPrefix(b, []byte("CONNECT ")) {
			t.Fatalf("accepted %q as port %d", b, p)
		}
	})
}

func connectSeeds() [][]byte {
	return [][]byte{[]byte("CONNECT 52"), []byte("CONNECT 4294967296"), []byte("CONNECT \r"), []byte("OK 1")}
}

func TestConnectSeeds(t *testing.T) { testdriver.SeedCorpus(t, "FuzzParseConnect", connectSeeds()) }
