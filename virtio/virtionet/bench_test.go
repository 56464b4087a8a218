package virtionet

import (
	"context"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

const benchBatch = 32

// pathRig drives the device's receive and transmit paths synchronously on
// the calling goroutine: the mock driver makes chains available, the real
// device code serves them, the driver takes the completions. The backend is
// a SOCK_SEQPACKET pair whose far end the rig reads and writes, standing in
// for the host kernel's side of a TAP.
type pathRig struct {
	dev    *Device
	peer   int
	mem    *guestmem.Memory
	rxd    *testdriver.Driver
	txd    *testdriver.Driver
	rx     *receiver
	tx     *transmitter
	ctx    context.Context
	rxBufs []uint64
	txPkts []uint64 // one header+frame area per batch slot
	frame  []byte
	buf    []byte
	// rxChains splits each receive buffer into this many chains (with
	// MRG_RXBUF a frame then spans them); 0 or 1 posts it whole.
	rxChains int
}

func newPathRig(tb testing.TB, vnet bool, handler FrameHandler, frameLen int) *pathRig {
	tb.Helper()
	be, peer := rawPair(tb, vnet)
	dev, err := New(Config{Backend: be, MAC: guestMAC[:], Handler: handler})
	if err != nil {
		tb.Fatal(err)
	}
	const memSize = 8 << 20
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: memSize})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	feat := dev.Features()
	r := &pathRig{dev: dev, peer: peer, mem: mem, ctx: context.Background(),
		frame: rawFrame(frameLen, 1), buf: make([]byte, HeaderLen+MaxFrameLen+1)}
	r.rxd = testdriver.New(mem, DefaultQueueSize, 0x1000, memSize/2, 0)
	r.txd = testdriver.New(mem, DefaultQueueSize, memSize/2, memSize, 0)
	var qs []*queue.Queue
	for _, d := range []*testdriver.Driver{r.rxd, r.txd} {
		d.EventIdx = true
		q, err := queue.New(mem, d.L, virtio.QueueOptions(feat, DefaultQueueSize))
		if err != nil {
			tb.Fatal(err)
		}
		qs = append(qs, q)
	}
	a := virtio.Activation{Mem: mem, Features: feat, Interrupt: nopIRQ{}}
	r.rx = newReceiver(dev, qs[RxQueue], a, guestOffload(feat))
	r.tx = newTransmitter(dev, qs[TxQueue], a, r.rx)
	for range benchBatch {
		r.rxBufs = append(r.rxBufs, r.rxd.Alloc(smallBuf, 64))
		p := r.txd.Alloc(uint64(HeaderLen+frameLen), 64)
		mem.WriteAt(make([]byte, HeaderLen), p)
		mem.WriteAt(r.frame, p+HeaderLen)
		r.txPkts = append(r.txPkts, p)
	}
	return r
}

// txRound: the guest queues n frames (header and frame in two descriptors,
// as Linux sends them), the device sends them, the host side reads them.
func (r *pathRig) txRound(tb testing.TB, n int) {
	for i := range n {
		p := r.txPkts[i]
		if _, ok := r.txd.Add(testdriver.Seg{Addr: p, Len: HeaderLen}, testdriver.Seg{Addr: p + HeaderLen, Len: uint32(len(r.frame))}); !ok {
			tb.Fatal("transmit ring full")
		}
	}
	if err := r.tx.drain(r.ctx); err != nil {
		tb.Fatal(err)
	}
	for range n {
		if _, _, ok := r.txd.Used(); !ok {
			tb.Fatal("frame not completed")
		}
		if _, err := unix.Read(r.peer, r.buf); err != nil {
			tb.Fatalf("host side: %v", err)
		}
	}
}

// rxRound: the guest posts n buffers, the host side writes n frames, the
// device delivers them, the guest takes them.
func (r *pathRig) rxRound(tb testing.TB, n int) {
	k := max(r.rxChains, 1)
	seg := uint32(smallBuf / k)
	for i := range n {
		for j := range k {
			if _, ok := r.rxd.Add(testdriver.Seg{Addr: r.rxBufs[i] + uint64(j)*uint64(seg), Len: seg, Write: true}); !ok {
				tb.Fatal("receive ring full")
			}
		}
	}
	out := r.frame
	if r.rx.vnet {
		out = r.buf[:HeaderLen+len(r.frame)]
		copy(out[HeaderLen:], r.frame)
	}
	for range n {
		if _, err := unix.Write(r.peer, out); err != nil {
			tb.Fatalf("host side: %v", err)
		}
	}
	for range n {
		k, err := r.rx.readFrame(false)
		if err != nil {
			tb.Fatal(err)
		}
		pkt := r.rx.prepare(k)
		if pkt == nil || !r.rx.deliverWait(r.ctx, pkt) {
			tb.Fatal("frame not delivered")
		}
	}
	r.rx.signal()
	for range n {
		// Linux reads num_buffers from the first chain and takes that many.
		var total uint32
		for j := 0; j < k; j++ {
			_, l, ok := r.rxd.Used()
			if !ok {
				tb.Fatalf("frame not received (chain %d of %d)", j, k)
			}
			total += l
			if total == uint32(HeaderLen+len(r.frame)) {
				break
			}
		}
		if total != uint32(HeaderLen+len(r.frame)) {
			tb.Fatalf("frame received with %d bytes", total)
		}
	}
}

func benchPath(b *testing.B, vnet, rx bool, frameLen, rxChains int) {
	r := newPathRig(b, vnet, nil, frameLen)
	r.rxChains = rxChains
	round := r.txRound
	if rx {
		round = r.rxRound
	}
	round(b, benchBatch) // grow the chains' arrays once
	b.SetBytes(int64(frameLen))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; {
		n := min(benchBatch, b.N-done)
		round(b, n)
		done += n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
}

// BenchmarkDataPath measures frames through the device between a guest ring
// (fake memory, mock driver, the real queue code) and a socket-pair backend,
// in batches of 32 as a busy guest keeps them coming. Each frame costs one
// backend system call on the device side plus one on the host side (read or
// write on the pair's far end), which the figures include. "vnet" passes the
// virtio-net header through the backend as a TAP with IFF_VNET_HDR does;
// "plain" strips and adds it. "mrg3" posts 510-byte receive chains, so
// each 1500-byte frame spans three (MRG_RXBUF).
func BenchmarkDataPath(b *testing.B) {
	for _, dir := range []string{"tx", "rx"} {
		for _, hdr := range []string{"vnet", "plain"} {
			for _, n := range []int{64, 1500} {
				b.Run(fmt.Sprintf("%s-%s-%d", dir, hdr, n), func(b *testing.B) {
					benchPath(b, hdr == "vnet", dir == "rx", n, 1)
				})
			}
		}
	}
	for _, hdr := range []string{"vnet", "plain"} {
		b.Run(fmt.Sprintf("rx-%s-1500-mrg3", hdr), func(b *testing.B) {
			benchPath(b, hdr == "vnet", true, 1500, 3)
		})
	}
}

// BenchmarkDHCP measures a DISCOVER from the guest ring to the OFFER in the
// guest's receive ring through the device (the server's own cost included).
func BenchmarkDHCP(b *testing.B) {
	srv, _ := testDHCP(b)
	r := newPathRig(b, false, srv, 64)
	disc, _, _ := discover(b, csumFull)
	round := dhcpRound(b, r, disc)
	round()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		round()
	}
}

func dhcpRound(tb testing.TB, r *pathRig, disc []byte) func() {
	p := r.txd.Alloc(uint64(HeaderLen+len(disc)), 64)
	r.mem.WriteAt(make([]byte, HeaderLen), p)
	r.mem.WriteAt(disc, p+HeaderLen)
	return func() {
		r.rxd.Add(testdriver.Seg{Addr: r.rxBufs[0], Len: smallBuf, Write: true})
		r.txd.Add(testdriver.Seg{Addr: p, Len: uint32(HeaderLen + len(disc))})
		if err := r.tx.drain(r.ctx); err != nil {
			tb.Fatal(err)
		}
		if _, _, ok := r.txd.Used(); !ok {
			tb.Fatal("DISCOVER not completed")
		}
		if _, _, ok := r.rxd.Used(); !ok {
			tb.Fatal("no OFFER")
		}
	}
}

// The data paths allocate nothing per frame once warm.
func TestDataPathDoesNotAllocate(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		for _, n := range []int{64, 1500} {
			r := newPathRig(t, vnet, nil, n)
			for name, round := range map[string]func(testing.TB, int){"tx": r.txRound, "rx": r.rxRound} {
				round(t, 4)
				if a := testing.AllocsPerRun(20, func() { round(t, 4) }); a != 0 {
					t.Errorf("%s vnet %v %d bytes: %v allocations per batch of 4", name, vnet, n, a)
				}
			}
		}
		// A 1500-byte frame over three receive chains (MRG_RXBUF).
		r := newPathRig(t, vnet, nil, 1500)
		r.rxChains = 3
		r.rxRound(t, 4)
		if a := testing.AllocsPerRun(20, func() { r.rxRound(t, 4) }); a != 0 {
			t.Errorf("rx vnet %v over three chains: %v allocations per batch of 4", vnet, a)
		}
	}
	srv, _ := testDHCP(t)
	r := newPathRig(t, false, srv, 64)
	disc, _, _ := discover(t, csumFull)
	round := dhcpRound(t, r, disc)
	round()
	if a := testing.AllocsPerRun(20, round); a != 0 {
		t.Errorf("DHCP DISCOVER→OFFER: %v allocations", a)
	}
}
