package vsock

import (
	"io"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// The data path benchmarks: one connection, 64 KiB packets, the mock
// driver as the guest in fake guest memory, the host end read or written
// by a goroutine through the net.Conn. b.N counts packets; allocations
// are the whole process's (driver, worker and host goroutine).

const benchPkt = 64 << 10

// benchDriver reuses fixed guest buffers: one per descriptor head.
type benchDriver struct {
	g      *guest
	txBuf  []uint64 // per tx head: header+payload buffer
	rxBuf  []uint64 // per rx head
	tick   *time.Ticker
	hdrRaw [HeaderLen]byte
}

func newBenchDriver(b *testing.B, g *guest, rxBufs int) *benchDriver {
	bd := &benchDriver{g: g, tick: time.NewTicker(time.Millisecond)}
	b.Cleanup(bd.tick.Stop)
	size := int(g.dev.MaxQueueSize())
	bd.txBuf = make([]uint64, size)
	bd.rxBuf = make([]uint64, size)
	// Every tx head may carry a 64 KiB packet: allocate lazily per head.
	for range rxBufs {
		gpa := g.rxd.Alloc(HeaderLen+benchPkt, 16)
		head, ok := g.rxd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen + benchPkt, Write: true})
		if !ok {
			b.Fatal("rx ring full")
		}
		bd.rxBuf[head] = gpa
	}
	g.dev.Notify(RxQueue)
	return bd
}

// waitIRQ sleeps until an interrupt or a millisecond passed, after asking
// for interrupts as a driver does before it sleeps.
func (bd *benchDriver) waitIRQ() {
	bd.g.rxd.EnableInterrupts()
	bd.g.txd.EnableInterrupts()
	select {
	case <-bd.g.irq.ch:
	case <-bd.tick.C:
	}
}

// sendPacket puts a packet with n payload bytes (already in place or
// garbage) on the tx ring, reusing the head's buffer. False when the ring
// has no two free descriptors.
func (bd *benchDriver) send(h *Header, n int) bool {
	g := bd.g
	if g.txd.FreeDescriptors() < 2 {
		return false
	}
	h.Len = uint32(n)
	h.Encode(bd.hdrRaw[:])
	// The head the driver will use is the top of its free stack; a buffer
	// per head pair is allocated once and reused.
	gpa := bd.slot(g)
	g.mem.WriteAt(bd.hdrRaw[:], gpa)
	if n == 0 {
		g.txd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen})
	} else {
		g.txd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen}, testdriver.Seg{Addr: gpa + HeaderLen, Len: uint32(n)})
	}
	return true
}

// slot returns a buffer not used by any chain in flight: a ring of
// buffers as large as the tx queue.
func (bd *benchDriver) slot(g *guest) uint64 {
	i := int(g.txd.AvailIdx()) % len(bd.txBuf)
	if bd.txBuf[i] == 0 {
		bd.txBuf[i] = g.txd.Alloc(HeaderLen+benchPkt, 16)
	}
	return bd.txBuf[i]
}

// BenchmarkGuestToHost: the guest sends 64 KiB RW packets as its credit
// allows; a host goroutine reads them.
func BenchmarkGuestToHost(b *testing.B) {
	g := newGuest(b, gopts{qsize: 256})
	l, _ := g.dev.Listen(80)
	bd := newBenchDriver(b, g, 64)
	req := hdr(OpRequest, 5, 80)
	req.BufAlloc = 1 << 20
	bd.send(&req, 0)
	g.dev.Notify(TxQueue)
	c, err := l.AcceptConn()
	if err != nil {
		b.Fatal(err)
	}
	readDone := make(chan int64)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, onlyReader{c}, make([]byte, benchPkt))
		readDone <- n
	}()
	var peerAlloc, peerFwd uint32 // the device's credit figures
	var sent uint32
	rw := hdr(OpRW, 5, 80)
	rw.BufAlloc = 1 << 20
	b.SetBytes(benchPkt)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; {
		progress := false
		for {
			_, _, ok := g.txd.Used()
			if !ok {
				break
			}
			progress = true
		}
		for {
			id, _, ok := g.rxd.Used()
			if !ok {
				break
			}
			progress = true
			gpa := bd.rxBuf[id]
			raw, _ := g.mem.Slice(gpa, HeaderLen)
			h, _ := DecodeHeader(raw)
			if h.Op == OpResponse || h.Op == OpCreditUpdate || h.Op == OpRW {
				peerAlloc, peerFwd = h.BufAlloc, h.FwdCnt
			}
			head, _ := g.rxd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen + benchPkt, Write: true})
			bd.rxBuf[head] = gpa
			g.dev.Notify(RxQueue)
		}
		kicked := false
		for i < b.N && peerAlloc-(sent-peerFwd) >= benchPkt && bd.send(&rw, benchPkt) {
			sent += benchPkt
			i++
			kicked = true
			progress = true
		}
		if kicked {
			g.dev.Notify(TxQueue)
		}
		if !progress {
			bd.waitIRQ()
		}
	}
	sh := hdr(OpShutdown, 5, 80)
	sh.Flags = ShutdownSend
	for !bd.send(&sh, 0) {
		g.reapTx()
		bd.waitIRQ()
	}
	g.dev.Notify(TxQueue)
	if n := <-readDone; n != int64(b.N)*benchPkt {
		b.Fatalf("host read %d bytes, guest sent %d", n, int64(b.N)*benchPkt)
	}
	b.StopTimer()
}

// onlyReader hides WriteTo etc. so io.CopyBuffer uses the given buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// BenchmarkHostToGuest: a host goroutine writes 64 KiB at a time; the
// guest takes 64 KiB packets and reports its progress with credit updates.
func BenchmarkHostToGuest(b *testing.B) {
	g := newGuest(b, gopts{qsize: 256})
	l, _ := g.dev.Listen(80)
	bd := newBenchDriver(b, g, 64)
	req := hdr(OpRequest, 5, 80)
	req.BufAlloc = 1 << 20
	bd.send(&req, 0)
	g.dev.Notify(TxQueue)
	c, err := l.AcceptConn()
	if err != nil {
		b.Fatal(err)
	}
	total := int64(b.N) * benchPkt
	go func() {
		buf := make([]byte, benchPkt)
		for left := total; left > 0; left -= benchPkt {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	var got int64
	var fwd, fwdSent uint32
	cu := hdr(OpCreditUpdate, 5, 80)
	cu.BufAlloc = 1 << 20
	b.SetBytes(benchPkt)
	b.ReportAllocs()
	b.ResetTimer()
	for got < total {
		progress := false
		for {
			_, _, ok := g.txd.Used()
			if !ok {
				break
			}
		}
		for {
			id, _, ok := g.rxd.Used()
			if !ok {
				break
			}
			progress = true
			gpa := bd.rxBuf[id]
			raw, _ := g.mem.Slice(gpa, HeaderLen)
			h, _ := DecodeHeader(raw)
			if h.Op == OpRW {
				got += int64(h.Len)
				fwd += h.Len
			}
			head, _ := g.rxd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen + benchPkt, Write: true})
			bd.rxBuf[head] = gpa
		}
		if progress {
			g.dev.Notify(RxQueue)
		}
		if fwd-fwdSent >= 256<<10 || (h2gStalled(progress) && fwd != fwdSent) {
			cu.FwdCnt = fwd
			if bd.send(&cu, 0) {
				fwdSent = fwd
				g.dev.Notify(TxQueue)
			}
		}
		if !progress {
			bd.waitIRQ()
		}
	}
	b.StopTimer()
	if got != total {
		b.Fatalf("guest got %d bytes, host wrote %d", got, total)
	}
}

func h2gStalled(progress bool) bool { return !progress }
