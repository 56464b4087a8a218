package virtionet

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Linux's buffer sizes without MRG_RXBUF: header plus a VLAN-tagged 1500-byte
// frame, or 64 KiB-odd with GUEST_TSO.
const (
	smallBuf = HeaderLen + 1500 + frameOverhead // 1530
	bigBuf   = 65562
)

func TestRxWithoutVnetHeaderAddsHeader(t *testing.T) {
	h := newHarness(t, opts{})
	h.refill(4, smallBuf)
	for i, n := range []int{14, 60, 1514, 1518} {
		f := rawFrame(n, byte(i))
		h.peerWrite(f)
		p := h.takeRx()
		if !bytes.Equal(p.frame, f) {
			t.Fatalf("frame %d: guest got %d bytes, want %d", i, len(p.frame), len(f))
		}
		if p.hdr != (header{}) || p.numBuffers != 1 || p.usedLen != uint32(HeaderLen+n) {
			t.Fatalf("frame %d: header %+v num_buffers %d used %d", i, p.hdr, p.numBuffers, p.usedLen)
		}
	}
	if c := h.dev.Counters(); c.RxPackets != 4 || c.RxBytes != 14+60+1514+1518 {
		t.Fatalf("counters %+v", c)
	}
	if h.irq.count[RxQueue].Load() == 0 {
		t.Fatal("no receive interrupt")
	}
}

// A frame spread over a chain of many descriptors (Linux's big-packet mode
// uses page-sized ones).
func TestRxScatteredBuffer(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: OffloadCsum | OffloadTSO4 | OffloadTSO6})
	h.postRx(bigBuf, 4096)
	h.dev.Notify(RxQueue)
	f := rawFrame(60000, 4)
	gso := header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	pkt := make([]byte, HeaderLen+len(f))
	gso.encode(pkt, 0xabcd) // the TAP leaves num_buffers as it was
	copy(pkt[HeaderLen:], f)
	h.peerWrite(pkt)
	p := h.takeRx()
	if !bytes.Equal(p.frame, f) || p.hdr != gso || p.numBuffers != 1 {
		t.Fatalf("got %d bytes, header %+v num_buffers %d", len(p.frame), p.hdr, p.numBuffers)
	}
	if off, ok := h.be.lastOffload(); !ok || off != OffloadCsum|OffloadTSO4|OffloadTSO6 {
		t.Fatalf("backend offloads set to %#x (%v), want CSUM|TSO4|TSO6", off, ok)
	}
}

// The header from a vnet backend is made to fit what the guest negotiated.
func TestRxVnetHeaderSanitised(t *testing.T) {
	all := OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN
	udp, start, off := udpFrame(guestMAC, hostMAC, [4]byte{10, 0, 0, 1}, [4]byte{10, 0, 0, 2}, 53, 4000, pattern(333, 7), csumPartial)
	cases := []struct {
		name    string
		drop    uint64 // features the guest refuses
		in      header
		frame   []byte
		want    header
		dropped func(Counters) uint64
		csumOK  bool // the guest must see a complete checksum
	}{
		{name: "data valid kept with GUEST_CSUM", in: header{flags: HdrFDataValid | 0x4}, frame: rawFrame(100, 1), want: header{flags: HdrFDataValid}},
		{name: "flags cleared without GUEST_CSUM", drop: FGuestCsum | FGuestTSO4 | FGuestTSO6 | FGuestECN, in: header{flags: HdrFDataValid, hdrLen: 9, gsoSize: 3}, frame: rawFrame(100, 1), want: header{}},
		{name: "partial checksum passed with GUEST_CSUM", in: header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}, frame: udp, want: header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}},
		{name: "partial checksum completed without GUEST_CSUM", drop: FGuestCsum | FGuestTSO4 | FGuestTSO6 | FGuestECN, in: header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}, frame: udp, want: header{}, csumOK: true},
		{name: "checksum offset outside frame", in: header{flags: HdrFNeedsCsum, csumStart: 99, csumOffset: 0}, frame: rawFrame(100, 1), dropped: func(c Counters) uint64 { return c.RxDropOffload }},
		{name: "TSO4 not accepted", drop: FGuestTSO4, in: header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, gsoSize: 1448, csumStart: 34, csumOffset: 16}, frame: rawFrame(3000, 1), dropped: func(c Counters) uint64 { return c.RxDropOffload }},
		{name: "ECN not accepted", drop: FGuestECN, in: header{flags: HdrFNeedsCsum, gsoType: GSOTCPv6 | GSOECN, gsoSize: 1400, csumStart: 54, csumOffset: 16}, frame: rawFrame(3000, 1), dropped: func(c Counters) uint64 { return c.RxDropOffload }},
		{name: "UFO never offered", in: header{gsoType: GSOUDP, gsoSize: 1400}, frame: rawFrame(3000, 1), dropped: func(c Counters) uint64 { return c.RxDropOffload }},
		{name: "oversize without GSO", in: header{}, frame: rawFrame(1519, 1), dropped: func(c Counters) uint64 { return c.RxDropOversize }},
		{name: "runt", in: header{}, frame: rawFrame(14, 1)[:13], dropped: func(c Counters) uint64 { return c.RxDropRunt }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, opts{vnet: true, offloads: all, drop: c.drop})
			h.refill(2, bigBuf)
			pkt := make([]byte, HeaderLen+len(c.frame))
			c.in.encode(pkt, 0x5555)
			copy(pkt[HeaderLen:], c.frame)
			h.peerWrite(pkt)
			if c.dropped != nil {
				// A good frame after it is the first the guest sees.
				next := rawFrame(80, 0xee)
				h.peerWrite(append(make([]byte, HeaderLen), next...))
				if p := h.takeRx(); !bytes.Equal(p.frame, next) {
					t.Fatalf("guest got a %d-byte frame first; want the dropped one skipped", len(p.frame))
				}
				if got := c.dropped(h.dev.Counters()); got != 1 {
					t.Fatalf("drop counter %d, want 1 (counters %+v)", got, h.dev.Counters())
				}
				return
			}
			p := h.takeRx()
			if p.hdr != c.want || p.numBuffers != 1 {
				t.Fatalf("header %+v num_buffers %d, want %+v and 1", p.hdr, p.numBuffers, c.want)
			}
			if len(p.frame) != len(c.frame) {
				t.Fatalf("frame of %d bytes, want %d", len(p.frame), len(c.frame))
			}
			if c.csumOK && !udpChecksumOK(t, p.frame) {
				t.Fatal("checksum not completed for a guest without GUEST_CSUM")
			}
			if !c.csumOK && !bytes.Equal(p.frame, c.frame) {
				t.Fatal("frame changed")
			}
		})
	}
}

// Frames bigger than the negotiated size are dropped: MTU without GSO,
// MaxFrameLen with it, and anything longer than the device's buffer.
func TestRxOversizeDropped(t *testing.T) {
	h := newHarness(t, opts{mtu: 9000})
	h.refill(3, bigBuf)
	h.peerWrite(rawFrame(9000+frameOverhead+1, 1)) // over the MTU
	h.peerWrite(rawFrame(MaxFrameLen+1, 2))        // the device's buffer is cut here
	want := rawFrame(9000+frameOverhead, 3)        // exactly the MTU with a VLAN header
	h.peerWrite(want)
	if p := h.takeRx(); !bytes.Equal(p.frame, want) {
		t.Fatalf("guest got %d bytes, want the %d-byte frame", len(p.frame), len(want))
	}
	if c := h.dev.Counters(); c.RxDropOversize != 2 || c.RxPackets != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// A receive buffer too small for a frame keeps it for the next frame that
// fits; the big frame is dropped and counted (without MRG_RXBUF).
func TestRxGuestBufferTooSmall(t *testing.T) {
	h := newHarness(t, opts{drop: FMrgRxbuf})
	head := h.postRx(HeaderLen+100, 0)
	h.dev.Notify(RxQueue)
	h.peerWrite(rawFrame(101, 1))
	small := rawFrame(100, 2)
	h.peerWrite(small)
	p := h.takeRx()
	if !bytes.Equal(p.frame, small) {
		t.Fatalf("got %d bytes, want the 100-byte frame", len(p.frame))
	}
	if len(h.rxBufs) != 0 {
		t.Fatalf("buffer %d not used for the frame that fits", head)
	}
	if c := h.dev.Counters(); c.RxDropGuestBuffer != 1 || c.RxPackets != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// With the ring empty the device holds one frame and waits for the guest:
// nothing is lost however slowly the guest refills, and the device never
// reads more than one frame ahead of what the guest has been given.
func TestRxBackPressure(t *testing.T) {
	h := newHarness(t, opts{qsize: 16})
	const total = 200
	go func() {
		// The host side writes everything at once; the socket holds what
		// the device has not read (as a TAP's queue would).
		for i := range total {
			if _, err := h.peer.Write(rawFrame(60+i, byte(i))); err != nil {
				return
			}
		}
	}()
	next, posted := 0, 0
	for next < total {
		// Refill a few at a time, as a slow guest would.
		n := 1 + next%5
		h.refill(min(n, total-next), smallBuf)
		posted += min(n, total-next)
		for range min(n, total-next) {
			p := h.takeRx()
			if want := rawFrame(60+next, byte(next)); !bytes.Equal(p.frame, want) {
				t.Fatalf("frame %d: got %d bytes, want %d (lost or reordered)", next, len(p.frame), len(want))
			}
			next++
			if r := h.be.reads.Load(); r > int64(posted)+1 {
				t.Fatalf("device read %d frames with only %d buffers posted: it buffers more than one", r, posted)
			}
		}
	}
	if c := h.dev.Counters(); c.RxPackets != total || c.RxDropGuestBuffer+c.RxDropOversize+c.RxDropRunt != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// The device waits for a kick while the ring is empty: it re-enabled
// notifications (used flags 0 without EVENT_IDX, avail_event at the next
// chain with it).
func TestRxEnablesNotificationsWhenEmpty(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		o := opts{}
		if !eventIdx {
			o.drop = 1 << 29
		}
		h := newHarness(t, o)
		h.refill(1, smallBuf)
		h.peerWrite(rawFrame(60, 1))
		h.takeRx()
		if !eventIdx && h.rxd.UsedFlags() != queue.UsedFNoNotify {
			t.Fatal("notifications not disabled while the device had buffers")
		}
		h.peerWrite(rawFrame(60, 2))
		// Wait until the device has read frame 2 and found no buffer.
		h.poll("the device to read the second frame", func() bool { return h.be.reads.Load() == 2 })
		kicked := func() bool {
			if eventIdx {
				return h.rxd.AvailEvent() == 1
			}
			return h.rxd.UsedFlags() == 0
		}
		h.poll("notifications enabled", kicked)
		h.refill(1, smallBuf)
		if p := h.takeRx(); p.frame[EthHeaderLen] != pattern(1, 2)[0] {
			t.Fatal("wrong frame after refill")
		}
	}
}

func TestRxReadableDescriptorFailsDevice(t *testing.T) {
	h := newHarness(t, opts{})
	a := h.rxd.Alloc(smallBuf+16, 16)
	h.rxd.Add(testdriver.Seg{Addr: a, Len: 16}, testdriver.Seg{Addr: a + 16, Len: smallBuf, Write: true})
	h.dev.Notify(RxQueue)
	h.peerWrite(rawFrame(60, 1))
	err := h.expectFail()
	if !errors.Is(err, queue.ErrGuest) || !strings.Contains(err.Error(), "guest gave a receive chain with 16 device-readable bytes") {
		t.Fatalf("error %v", err)
	}
	if _, _, ok := h.rxd.Used(); ok {
		t.Fatal("chain completed")
	}
}

// A receive ring the guest corrupts fails the device.
func TestRxBadRingFailsDevice(t *testing.T) {
	h := newHarness(t, opts{})
	h.rxd.WriteDesc(0, testdriver.Desc{Addr: 1 << 40, Len: 2000, Flags: testdriver.FWrite})
	h.rxd.Publish(0)
	h.dev.Notify(RxQueue)
	h.peerWrite(rawFrame(60, 1))
	if err := h.expectFail(); queue.KindOf(err) != queue.BufferOutOfRange {
		t.Fatalf("error %v, want a buffer outside guest memory", err)
	}
}
