package virtionet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

func TestTxWithoutVnetHeaderStripsHeader(t *testing.T) {
	h := newHarness(t, opts{})
	for i, n := range []int{60, 1514, 1518} {
		f := rawFrame(n, byte(i))
		h.sendTx(header{}, f, 0)
		if got := h.peerRead(); !bytes.Equal(got, f) {
			t.Fatalf("frame %d: backend got %d bytes, want the %d-byte frame without header", i, len(got), len(f))
		}
	}
	// One chain split into many small descriptors, header split too.
	f := rawFrame(1000, 9)
	h.sendTx(header{}, f, 7)
	if got := h.peerRead(); !bytes.Equal(got, f) {
		t.Fatal("frame from a 7-byte-descriptor chain differs")
	}
	h.waitTxDone(4)
	c := h.dev.Counters()
	if c.TxPackets != 4 || c.TxBytes != 60+1514+1518+1000 {
		t.Fatalf("counters %+v", c)
	}
}

func TestTxVnetHeaderPassedToBackend(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: OffloadCsum | OffloadTSO4 | OffloadTSO6})
	f, start, off := udpFrame(hostMAC, guestMAC, [4]byte{10, 0, 0, 2}, [4]byte{10, 0, 0, 1}, 1000, 2000, pattern(100, 1), csumPartial)
	in := header{flags: HdrFNeedsCsum | HdrFDataValid, csumStart: start, csumOffset: off}
	pkt := make([]byte, HeaderLen+len(f))
	in.encode(pkt, 0x7777) // num_buffers garbage from the guest
	copy(pkt[HeaderLen:], f)
	h.sendRawTx(pkt, 0)
	got := h.peerRead()
	if len(got) != HeaderLen+len(f) || !bytes.Equal(got[HeaderLen:], f) {
		t.Fatalf("backend got %d bytes, want header + %d", len(got), len(f))
	}
	gh := decodeHeader(got)
	if gh.flags != HdrFNeedsCsum || gh.csumStart != start || gh.csumOffset != off {
		t.Fatalf("header to backend %+v: want NEEDS_CSUM only (DATA_VALID stripped), start %d offset %d", gh, start, off)
	}
	if nb := binary.LittleEndian.Uint16(got[hdrNumBuffers:]); nb != 0 {
		t.Fatalf("num_buffers %d passed to the backend", nb)
	}
	// A TSO frame with its header goes through untouched.
	tso := header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	big := rawFrame(30000, 3)
	h.sendTx(tso, big, 0)
	got = h.peerRead()
	if decodeHeader(got) != tso || !bytes.Equal(got[HeaderLen:], big) {
		t.Fatalf("TSO frame header %+v, want %+v", decodeHeader(got), tso)
	}
	h.waitTxDone(2)
	if c := h.dev.Counters(); c.TxPackets != 2 || c.TxCsumCompleted != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// Without a vnet-header backend the device offers no CSUM, but a guest that
// sets NEEDS_CSUM anyway gets its checksum completed rather than a broken
// frame on the wire.
func TestTxPartialChecksumCompletedInSoftware(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		h := newHarness(t, opts{vnet: vnet}) // vnet without offloads: CSUM not offered either
		if h.feat&FCsum != 0 {
			t.Fatal("CSUM offered without backend offloads")
		}
		for _, n := range []int{0, 1, 101, 1400} {
			f, start, off := udpFrame(hostMAC, guestMAC, [4]byte{10, 0, 0, 2}, [4]byte{10, 0, 0, 1}, 1000, 2000, pattern(n, byte(n)), csumPartial)
			h.sendTx(header{flags: HdrFNeedsCsum, csumStart: start, csumOffset: off}, f, 0)
			got := h.peerRead()
			if vnet {
				if hd := decodeHeader(got); hd != (header{}) {
					t.Fatalf("header %+v after software checksum, want zero", hd)
				}
				got = got[HeaderLen:]
			}
			if !udpChecksumOK(t, got) {
				t.Fatalf("vnet %v payload %d: UDP checksum not completed", vnet, n)
			}
		}
		h.waitTxDone(4)
		if c := h.dev.Counters(); c.TxCsumCompleted != 4 || c.TxPackets != 4 {
			t.Fatalf("counters %+v", c)
		}
	}
}

func TestTxDropsBadFrames(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: OffloadCsum | OffloadTSO4, mtu: 1500})
	cases := []struct {
		name string
		hdr  header
		n    int
		ctr  func(Counters) uint64
	}{
		{"header only", header{}, 0, func(c Counters) uint64 { return c.TxDropRunt }},
		{"13-byte frame", header{}, 13, func(c Counters) uint64 { return c.TxDropRunt }},
		{"over MTU", header{}, 1500 + frameOverhead + 1, func(c Counters) uint64 { return c.TxDropOversize }},
		{"TSO6 not offered", header{flags: HdrFNeedsCsum, gsoType: GSOTCPv6, gsoSize: 1400, csumStart: 54, csumOffset: 16}, 3000, func(c Counters) uint64 { return c.TxDropBadHeader }},
		{"UFO", header{gsoType: GSOUDP, gsoSize: 1400}, 3000, func(c Counters) uint64 { return c.TxDropBadHeader }},
		{"ECN without TSO", header{gsoType: GSOECN}, 100, func(c Counters) uint64 { return c.TxDropBadHeader }},
		{"TSO gso_size 0", header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, csumStart: 34, csumOffset: 16}, 3000, func(c Counters) uint64 { return c.TxDropBadHeader }},
		{"csum past the end", header{flags: HdrFNeedsCsum, csumStart: 90, csumOffset: 9}, 100, func(c Counters) uint64 { return c.TxDropBadHeader }},
		{"csum start past the end", header{flags: HdrFNeedsCsum, csumStart: 0xffff, csumOffset: 0xffff}, 100, func(c Counters) uint64 { return c.TxDropBadHeader }},
	}
	for _, c := range cases {
		before := c.ctr(h.dev.Counters())
		h.sendTx(c.hdr, rawFrame(max(c.n, EthHeaderLen), 1)[:c.n], 0)
		h.waitTxDone(1)
		if got := c.ctr(h.dev.Counters()); got != before+1 {
			t.Errorf("%s: drop counter %d, want %d", c.name, got, before+1)
		}
	}
	// None of them reached the backend: the next frame is the first there.
	marker := rawFrame(64, 0xaa)
	h.sendTx(header{}, marker, 0)
	if got := h.peerRead(); !bytes.Equal(got[HeaderLen:], marker) {
		t.Fatalf("backend got a %d-byte frame before the marker", len(got))
	}
	if len(h.failures()) != 0 {
		t.Fatalf("bad frames failed the device: %v", h.failures())
	}
}

// Chains that break the protocol fail the device with a guest error and are
// never completed.
func TestTxMalformedChainsFailDevice(t *testing.T) {
	cases := []struct {
		name  string
		build func(h *harness)
		want  string
	}{
		{"writable descriptor", func(h *harness) {
			a := h.txd.Alloc(100, 16)
			h.txd.Add(testdriver.Seg{Addr: a, Len: 80}, testdriver.Seg{Addr: a + 80, Len: 20, Write: true})
		}, "device-writable"},
		{"only writable", func(h *harness) {
			a := h.txd.Alloc(100, 16)
			h.txd.Add(testdriver.Seg{Addr: a, Len: 100, Write: true})
		}, "device-writable"},
		{"short header", func(h *harness) {
			a := h.txd.Alloc(11, 16)
			h.txd.Add(testdriver.Seg{Addr: a, Len: 11})
		}, "shorter than the 12-byte"},
		{"empty chain", func(h *harness) {
			h.txd.Add(testdriver.Seg{Addr: 0x2000, Len: 0})
		}, "shorter than the 12-byte"},
		{"64 KiB + header + 1", func(h *harness) {
			n := HeaderLen + MaxFrameLen + 1
			a := h.txd.Alloc(uint64(n), 16)
			h.txd.Add(testdriver.Seg{Addr: a, Len: uint32(n / 2)}, testdriver.Seg{Addr: a + uint64(n/2), Len: uint32(n - n/2)})
		}, "at most"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, opts{vnet: true})
			c.build(h)
			h.dev.Notify(TxQueue)
			err := h.expectFail()
			if !errors.Is(err, queue.ErrGuest) || !strings.Contains(err.Error(), "guest gave") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q: want a guest error mentioning %q", err, c.want)
			}
			if _, _, ok := h.txd.Used(); ok {
				t.Fatal("a chain that failed the device was completed")
			}
		})
	}
}

// The largest legal chain (64 KiB frame plus Ethernet/VLAN header and the
// virtio-net header) passes as a TSO frame.
func TestTxLargestChain(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: OffloadCsum | OffloadTSO4})
	f := rawFrame(MaxFrameLen, 5)
	tso := header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, hdrLen: 54, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	h.sendTx(tso, f, 4096)
	if got := h.peerRead(); len(got) != HeaderLen+MaxFrameLen || !bytes.Equal(got[HeaderLen:], f) {
		t.Fatalf("backend got %d bytes", len(got))
	}
	h.waitTxDone(1)
}

// A frame the backend refuses is counted, and the queue goes on.
func TestTxBackendErrorCounted(t *testing.T) {
	h := newHarness(t, opts{})
	h.peer.Close() // writes now fail with EPIPE/ECONNRESET
	h.sendTx(header{}, rawFrame(100, 1), 0)
	h.sendTx(header{}, rawFrame(100, 2), 0)
	h.waitTxDone(2)
	if c := h.dev.Counters(); c.TxDropBackend != 2 || c.TxPackets != 0 {
		t.Fatalf("counters %+v", c)
	}
}
