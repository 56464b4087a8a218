package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// FuzzTX input:
//
//	[0]    flags (fz* below)
//	[1]    descriptor size for the chain (0: header and frame apart)
//	[2:4]  le16 n: with fzPad, append 2n zero bytes to the chain (to reach
//	       and pass the 64 KiB limit)
//	[4:]   the chain's bytes: virtio-net header, then the frame
//
// One transmit chain goes through the real transmit path (copy out, header
// checks, checksum completion, the DHCP handler, the backend write) and, for
// a handler reply, the real receive path into a one-buffer ring.
const (
	fzIndirect = 1 << 0 // the chain is one indirect descriptor
	fzVnet     = 1 << 1 // backend with vnet headers and all offloads
	fzOffloads = 1 << 2 // the guest accepted every offload offered
	fzWritable = 1 << 3 // a device-writable descriptor ends the chain
	fzHandler  = 1 << 4 // the DHCP server is on the wire
	fzRxEmpty  = 1 << 5 // the guest posted no receive buffer
	fzPad      = 1 << 6
	fuzzMem    = 1 << 20
)

type nopIRQ struct{}

func (nopIRQ) Signal(int) error { return nil }

// rawPair is a SOCK_SEQPACKET pair: the device's end as a test backend and
// the peer as a raw non-blocking fd.
func rawPair(tb testing.TB, vnet bool) (*testBackend, int) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
	unix.SetsockoptInt(fds[1], unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	fb, err := NewFileBackend(osFile(fds[0]), vnet)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { fb.Close(); unix.Close(fds[1]) })
	var off Offload
	if vnet {
		off = OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN
	}
	return &testBackend{FileBackend: fb, offloads: off}, fds[1]
}

func FuzzTX(f *testing.F) {
	for _, s := range txSeeds(f) {
		f.Add(s)
	}
	srv, _ := testDHCP(f)
	type variant struct {
		dev  *Device
		peer int
	}
	var devs [2][2]variant // [vnet][handler]
	for v := range 2 {
		for hd := range 2 {
			be, peer := rawPair(f, v == 1)
			cfg := Config{Backend: be, MAC: guestMAC[:], QueueSize: 16}
			if hd == 1 {
				cfg.Handler = srv
			}
			d, err := New(cfg)
			if err != nil {
				f.Fatal(err)
			}
			devs[v][hd] = variant{d, peer}
		}
	}
	backing := make([]byte, fuzzMem)
	mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: backing})
	if err != nil {
		f.Fatal(err)
	}
	peerBuf := make([]byte, 2*MaxFrameLen)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 {
			return
		}
		flags, seg := in[0], int(in[1])
		chain := in[4:]
		if flags&fzPad != 0 {
			chain = append(append([]byte(nil), chain...), make([]byte, 2*int(binary.LittleEndian.Uint16(in[2:])))...)
		}
		v := devs[b2i(flags&fzVnet != 0)][b2i(flags&fzHandler != 0)]
		feat := v.dev.Features()
		if flags&fzOffloads == 0 {
			feat &^= FCsum | FGuestCsum | FHostTSO4 | FHostTSO6 | FHostECN | FGuestTSO4 | FGuestTSO6 | FGuestECN
		}
		clear(backing)
		txd := testdriver.New(mem, 16, 0x1000, fuzzMem/2, 0)
		rxd := testdriver.New(mem, 16, fuzzMem/2, fuzzMem, 0)
		txq, err := queue.New(mem, txd.L, virtio.QueueOptions(feat, 16))
		if err != nil {
			t.Fatal(err)
		}
		rxq, err := queue.New(mem, rxd.L, virtio.QueueOptions(feat, 16))
		if err != nil {
			t.Fatal(err)
		}
		a := virtio.Activation{Mem: mem, Features: feat, Interrupt: nopIRQ{}}
		rx := newReceiver(v.dev, rxq, a, guestOffload(feat))
		tx := newTransmitter(v.dev, txq, a, rx)
		if flags&fzRxEmpty == 0 {
			b := rxd.Alloc(smallBuf, 16)
			rxd.Add(testdriver.Seg{Addr: b, Len: smallBuf, Write: true})
		}
		layChain(txd, mem, chain, seg, flags)

		before := v.dev.Counters()
		err = tx.drain(context.Background())
		after := v.dev.Counters()
		outcomes := func(c Counters) uint64 {
			return c.TxPackets + c.HandlerConsumed + c.TxDropRunt + c.TxDropOversize + c.TxDropBadHeader + c.TxDropBackend
		}
		n := outcomes(after) - outcomes(before)
		if err != nil {
			if !errors.Is(err, queue.ErrGuest) {
				t.Fatalf("host error from a guest chain: %v", err)
			}
			if _, _, ok := txd.Used(); ok || n != 0 {
				t.Fatalf("chain completed (%d outcomes) although the device failed", n)
			}
		} else {
			if _, l, ok := txd.Used(); !ok || l != 0 {
				t.Fatalf("chain not completed (ok %v, used length %d)", ok, l)
			}
			if n != 1 {
				t.Fatalf("%d outcomes counted for one frame: %+v → %+v", n, before, after)
			}
		}
		// The backend got the frame iff TxPackets says so, and whole.
		sent := after.TxPackets - before.TxPackets
		got, rerr := unix.Read(v.peer, peerBuf)
		switch {
		case sent == 0 && rerr != unix.EAGAIN:
			t.Fatalf("backend got %d bytes (%v) but nothing was counted as sent", got, rerr)
		case sent == 1 && rerr != nil:
			t.Fatalf("counted as sent but the backend has nothing: %v", rerr)
		case sent == 1:
			want := len(chain) - HeaderLen
			if flags&fzVnet != 0 {
				want += HeaderLen
			}
			if got != want {
				t.Fatalf("backend got %d bytes, want %d", got, want)
			}
			if _, err := unix.Read(v.peer, peerBuf); err != unix.EAGAIN {
				t.Fatal("more than one frame sent")
			}
		}
		// A handler reply is a whole frame with a zero header, inside the
		// guest's buffer.
		if after.HandlerReplies != before.HandlerReplies {
			_, l, ok := rxd.Used()
			if !ok || l < HeaderLen+EthHeaderLen || l > smallBuf {
				t.Fatalf("reply counted but used ring has ok %v length %d", ok, l)
			}
		} else if _, _, ok := rxd.Used(); ok {
			t.Fatal("receive buffer used without a reply counted")
		}
	})
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// layChain writes chain into guest memory and makes it available as
// descriptors of seg bytes.
func layChain(d *testdriver.Driver, mem *guestmem.Memory, chain []byte, seg int, flags byte) {
	a := d.Alloc(uint64(len(chain))+1, 16)
	mem.WriteAt(chain, a)
	var segs []testdriver.Seg
	if seg == 0 {
		h := min(len(chain), HeaderLen)
		segs = append(segs, testdriver.Seg{Addr: a, Len: uint32(h)})
		if len(chain) > h {
			segs = append(segs, testdriver.Seg{Addr: a + uint64(h), Len: uint32(len(chain) - h)})
		}
	} else {
		// At most 12 descriptors; the last takes the rest.
		for off := 0; off < len(chain); off += seg {
			l := min(seg, len(chain)-off)
			if len(segs) == 11 {
				l = len(chain) - off
			}
			segs = append(segs, testdriver.Seg{Addr: a + uint64(off), Len: uint32(l)})
			if len(segs) == 12 {
				break
			}
		}
	}
	if flags&fzWritable != 0 {
		segs = append(segs, testdriver.Seg{Addr: d.Alloc(64, 16), Len: 64, Write: true})
	}
	if len(segs) == 0 {
		segs = append(segs, testdriver.Seg{Addr: a, Len: 0})
	}
	if flags&fzIndirect != 0 {
		d.AddIndirect(segs...)
	} else {
		d.Add(segs...)
	}
}

// txSeeds are well-formed frames of each kind the path distinguishes, and
// broken ones.
func txSeeds(tb testing.TB) [][]byte {
	mk := func(flags, seg byte, pad uint16, hdr header, frame []byte) []byte {
		b := []byte{flags, seg}
		b = binary.LittleEndian.AppendUint16(b, pad)
		h := make([]byte, HeaderLen)
		hdr.encode(h, 0)
		return append(append(b, h...), frame...)
	}
	disc, start, off := discover(tb, csumFull)
	discPartial, _, _ := discover(tb, csumPartial)
	udp, us, uo := udpFrame(hostMAC, guestMAC, [4]byte{10, 200, 7, 2}, [4]byte{10, 200, 7, 1}, 5000, 53, pattern(40, 3), csumPartial)
	partial := header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}
	tso := header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	return [][]byte{
		mk(fzHandler, 0, 0, header{}, disc),
		mk(fzHandler|fzVnet|fzOffloads, 0, 0, partial, discPartial),
		mk(fzHandler|fzRxEmpty, 5, 0, header{}, disc),
		mk(fzHandler|fzIndirect, 64, 0, header{}, disc),
		mk(0, 0, 0, header{}, arpRequest([4]byte{10, 200, 7, 1})),
		mk(fzVnet|fzOffloads, 0, 0, header{flags: HdrFNeedsCsum, csumStart: us, csumOffset: uo}, udp),
		mk(0, 0, 0, header{flags: HdrFNeedsCsum, csumStart: us, csumOffset: uo}, udp), // software checksum
		mk(fzVnet|fzOffloads, 0, 0, tso, rawFrame(200, 1)),
		mk(fzVnet, 0, 0, tso, rawFrame(200, 1)),                                                         // TSO not negotiated
		mk(0, 0, 0, header{flags: HdrFNeedsCsum, csumStart: 0xfff0, csumOffset: 0x20}, rawFrame(64, 2)), // offset outside
		mk(0, 0, 0, header{}, rawFrame(14, 1)[:13]),                                                     // runt
		mk(0, 0, 800, header{}, rawFrame(64, 1)),                                                        // over the MTU
		mk(fzVnet|fzOffloads|fzPad, 200, 32760, tso, rawFrame(64, 1)),                                   // 64 KiB + header + 2: guest error
		mk(fzWritable, 0, 0, header{}, rawFrame(64, 1)),                                                 // writable descriptor
		{0, 0, 0, 0, 1, 2, 3}, // short header
	}
}

func TestTXFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzTX", txSeeds(t))
}

// FuzzRXFrame feeds what a backend might return (a vnet header and frame,
// or a bare frame) to the receive path's checks. The host kernel is not
// hostile, but a backend that ignores TUNSETOFFLOAD, or a socket that is not
// a TAP, must not make the device hand the guest something it did not
// negotiate. in[0] chooses the backend kind and what the guest accepted.
func FuzzRXFrame(f *testing.F) {
	udp, start, off := udpFrame(guestMAC, hostMAC, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 53, 4000, pattern(50, 7), csumPartial)
	withHdr := func(h header, frame []byte) []byte {
		b := make([]byte, HeaderLen+len(frame))
		h.encode(b, 0x1234)
		copy(b[HeaderLen:], frame)
		return b
	}
	f.Add(byte(1), withHdr(header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}, udp))
	f.Add(byte(3), withHdr(header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}, udp))
	f.Add(byte(3), withHdr(header{flags: HdrFNeedsCsum | HdrFDataValid, gsoType: GSOTCPv4 | GSOECN, gsoSize: 1448, csumStart: 34, csumOffset: 16}, rawFrame(3000, 1)))
	f.Add(byte(0), rawFrame(60, 1))
	f.Add(byte(1), []byte{1, 2, 3})
	be, _ := rawPair(f, true)
	dev, err := New(Config{Backend: be, MAC: guestMAC[:]})
	if err != nil {
		f.Fatal(err)
	}
	all := dev.Features()
	buf := make([]byte, HeaderLen+MaxFrameLen+1)
	f.Fuzz(func(t *testing.T, mode byte, in []byte) {
		feat := all
		if mode&2 == 0 {
			feat &^= FGuestCsum | FGuestTSO4 | FGuestTSO6 | FGuestECN
		}
		r := &receiver{d: dev, vnet: mode&1 != 0, maxFrame: dev.mtu + frameOverhead, buf: buf}
		r.guestOff.Store(uint32(guestOffload(feat)))
		guestCsum := feat&FGuestCsum != 0
		var n int
		if r.vnet {
			n = copy(r.buf, in)
		} else {
			n = copy(r.buf[HeaderLen:], in)
		}
		pkt := r.prepare(n)
		if pkt == nil {
			return
		}
		h := decodeHeader(pkt)
		frame := pkt[HeaderLen:]
		switch {
		case binary.LittleEndian.Uint16(pkt[hdrNumBuffers:]) != 1:
			t.Fatal("num_buffers is not 1")
		case len(frame) < EthHeaderLen || len(frame) > MaxFrameLen:
			t.Fatalf("frame of %d bytes delivered", len(frame))
		case !guestCsum && h != (header{}):
			t.Fatalf("header %+v for a guest without GUEST_CSUM", h)
		case h.flags&^(HdrFNeedsCsum|HdrFDataValid) != 0:
			t.Fatalf("flags %#x", h.flags)
		case h.gso() == GSONone && len(frame) > r.maxFrame:
			t.Fatalf("%d-byte frame without GSO over the MTU", len(frame))
		case h.flags&HdrFNeedsCsum != 0 && !h.csumFits(len(frame)):
			t.Fatal("checksum offsets outside the frame")
		}
		if need, ok := gsoOffload(h.gsoType); !ok || need&^guestOffload(feat) != 0 {
			t.Fatalf("GSO type %#x not negotiated", h.gsoType)
		}
	})
}
