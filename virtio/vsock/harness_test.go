package vsock

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

const (
	testMem  = 32 << 20
	waitTime = 10 * time.Second // bound on every wait; never a speed goal
	guestCID = DefaultGuestCID
)

// fakeIRQ counts interrupts and wakes waiters.
type fakeIRQ struct {
	ch    chan int
	count [numQueues]atomic.Int64
}

func (f *fakeIRQ) Signal(q int) error {
	if q >= 0 && q < numQueues {
		f.count[q].Add(1)
	}
	select {
	case f.ch <- q:
	default:
	}
	return nil
}

// guest is the guest's side of a vsock device: a mock driver per queue in
// fake guest memory, and helpers that speak the packet protocol as the
// Linux driver does.
type guest struct {
	t   testing.TB
	dev *Device
	mem *guestmem.Memory
	rxd *testdriver.Driver
	txd *testdriver.Driver
	evd *testdriver.Driver
	irq *fakeIRQ

	rxSize  int               // payload room of each receive buffer posted by refill
	rxSplit bool              // post receive buffers as header + payload descriptors
	rxBufs  map[uint16]uint64 // head → buffer GPA
	evBufs  map[uint16]uint64
	txTaken int // transmit chains the device has completed, as reaped so far

	mu     sync.Mutex
	fails  []error
	failed chan struct{}
}

type gopts struct {
	cfg     Config
	rxSize  int // 0: 4 KiB, as Linux posts
	rxSplit bool
	qsize   uint16
}

func newGuest(tb testing.TB, o gopts) *guest {
	tb.Helper()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	if o.cfg.QueueSize == 0 {
		o.cfg.QueueSize = o.qsize
	}
	dev, err := New(o.cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := dev.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	g := &guest{t: tb, dev: dev, mem: mem, irq: &fakeIRQ{ch: make(chan int, 64)}, failed: make(chan struct{}, 16),
		rxSize: o.rxSize, rxSplit: o.rxSplit}
	if g.rxSize == 0 {
		g.rxSize = 4096
	}
	g.activate()
	return g
}

// activate lays out fresh rings and activates the device on them.
func (g *guest) activate() {
	g.t.Helper()
	g.rxBufs, g.evBufs = map[uint16]uint64{}, map[uint16]uint64{}
	qs := g.dev.MaxQueueSize()
	g.rxd = testdriver.New(g.mem, qs, 0x1000, 8<<20, 0)
	g.txd = testdriver.New(g.mem, qs, 8<<20, 28<<20, 0)
	g.evd = testdriver.New(g.mem, qs, 28<<20, testMem, 0)
	feat := g.dev.Features()
	var queues []*queue.Queue
	for _, d := range []*testdriver.Driver{g.rxd, g.txd, g.evd} {
		d.EventIdx = feat&virtio.FEventIdx != 0
		q, err := queue.New(g.mem, d.L, virtio.QueueOptions(feat, qs))
		if err != nil {
			g.t.Fatal(err)
		}
		queues = append(queues, q)
	}
	err := g.dev.Activate(context.Background(), virtio.Activation{
		Mem: g.mem, Features: feat, Queues: queues, Interrupt: g.irq,
		Fail: func(err error) {
			g.mu.Lock()
			g.fails = append(g.fails, err)
			g.mu.Unlock()
			select {
			case g.failed <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		g.t.Fatalf("Activate: %v", err)
	}
}

func (g *guest) failures() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]error(nil), g.fails...)
}

// postRx makes n receive buffers of the configured size available and
// kicks.
func (g *guest) postRx(n int) {
	g.t.Helper()
	for range n {
		size := HeaderLen + g.rxSize
		gpa := g.rxd.Alloc(uint64(size), 16)
		var head uint16
		var ok bool
		if g.rxSplit {
			head, ok = g.rxd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen, Write: true},
				testdriver.Seg{Addr: gpa + HeaderLen, Len: uint32(g.rxSize), Write: true})
		} else {
			head, ok = g.rxd.Add(testdriver.Seg{Addr: gpa, Len: uint32(size), Write: true})
		}
		if !ok {
			g.t.Fatal("receive queue full")
		}
		g.rxBufs[head] = gpa
	}
	g.dev.Notify(RxQueue)
}

// postEvent makes one event buffer available.
func (g *guest) postEvent() {
	g.t.Helper()
	gpa := g.evd.Alloc(eventLen, 4)
	if err := g.mem.PutUint32(gpa, 0xffffffff); err != nil {
		g.t.Fatal(err)
	}
	head, ok := g.evd.Add(testdriver.Seg{Addr: gpa, Len: eventLen, Write: true})
	if !ok {
		g.t.Fatal("event queue full")
	}
	g.evBufs[head] = gpa
	g.dev.Notify(EventQueue)
}

// wait blocks until ok, re-checking after every interrupt.
func (g *guest) wait(what string, ok func() bool) {
	g.t.Helper()
	deadline := time.NewTimer(waitTime)
	defer deadline.Stop()
	for {
		if ok() {
			return
		}
		g.rxd.EnableInterrupts()
		g.txd.EnableInterrupts()
		g.evd.EnableInterrupts()
		if ok() {
			return
		}
		select {
		case <-g.irq.ch:
		case <-g.failed:
			g.t.Fatalf("waiting for %s: device failed: %v", what, g.failures())
		case <-time.After(5 * time.Millisecond): // host-side progress raises no interrupt
		case <-deadline.C:
			g.t.Fatalf("%s did not happen within %v", what, waitTime)
		}
	}
}

// hdr is a header from the guest: src guest:src, dst host:dst.
func hdr(op Op, src, dst uint32) Header {
	return Header{SrcCID: guestCID, DstCID: HostCID, SrcPort: src, DstPort: dst, Type: TypeStream, Op: op, BufAlloc: 256 << 10}
}

// send puts one packet on the transmit queue (header and payload in
// separate descriptors, as Linux does) and kicks.
func (g *guest) send(h Header, payload []byte) {
	g.t.Helper()
	if h.Len == 0 {
		h.Len = uint32(len(payload))
	}
	var b [HeaderLen]byte
	h.Encode(b[:])
	g.sendRaw(b[:], payload)
}

func (g *guest) sendRaw(hdrBytes, payload []byte) {
	g.t.Helper()
	g.reapTx()
	if g.txd.FreeDescriptors() < 2 {
		g.wait("a free transmit descriptor", func() bool { g.reapTx(); return g.txd.FreeDescriptors() >= 2 })
	}
	gpa := g.txd.Alloc(uint64(len(hdrBytes)+len(payload)), 16)
	if err := g.mem.WriteAt(hdrBytes, gpa); err != nil {
		g.t.Fatal(err)
	}
	segs := []testdriver.Seg{{Addr: gpa, Len: uint32(len(hdrBytes))}}
	if len(payload) > 0 {
		if err := g.mem.WriteAt(payload, gpa+uint64(len(hdrBytes))); err != nil {
			g.t.Fatal(err)
		}
		segs = append(segs, testdriver.Seg{Addr: gpa + uint64(len(hdrBytes)), Len: uint32(len(payload))})
	}
	if _, ok := g.txd.Add(segs...); !ok {
		g.t.Fatal("transmit queue full")
	}
	g.dev.Notify(TxQueue)
}

// reapTx collects transmit completions; the heap is reused once all are in.
func (g *guest) reapTx() int {
	n := 0
	for {
		_, _, ok := g.txd.Used()
		if !ok {
			break
		}
		n++
	}
	if g.txd.FreeDescriptors() == int(g.txd.L.Size) {
		g.txd.ResetHeap()
	}
	g.txTaken += n
	return n
}

// waitTxDone waits until the device has taken every transmit chain.
func (g *guest) waitTxDone() {
	g.t.Helper()
	g.wait("transmit completions", func() bool {
		g.reapTx()
		return g.txd.FreeDescriptors() == int(g.txd.L.Size)
	})
}

type packet struct {
	h       Header
	payload []byte
}

// tryRecv takes the next filled receive buffer, if any.
func (g *guest) tryRecv() (packet, bool) {
	g.t.Helper()
	id, n, ok := g.rxd.Used()
	if !ok {
		return packet{}, false
	}
	gpa, known := g.rxBufs[uint16(id)]
	if !known {
		g.t.Fatalf("used ring returned unknown head %d", id)
	}
	delete(g.rxBufs, uint16(id))
	if n < HeaderLen {
		g.t.Fatalf("used length %d shorter than a header", n)
	}
	b, err := g.mem.Slice(gpa, uint64(n))
	if err != nil {
		g.t.Fatal(err)
	}
	h, _ := DecodeHeader(b)
	if h.Len != n-HeaderLen {
		g.t.Fatalf("packet %v in a used length of %d", h, n)
	}
	if h.SrcCID != HostCID || h.DstCID != guestCID || h.Type != TypeStream {
		g.t.Fatalf("packet with bad addressing: %v", h)
	}
	return packet{h: h, payload: bytes.Clone(b[HeaderLen:])}, true
}

// recv waits for the next packet the device sends.
func (g *guest) recv() packet {
	g.t.Helper()
	var p packet
	g.wait("a packet from the device", func() bool {
		var ok bool
		p, ok = g.tryRecv()
		return ok
	})
	return p
}

// expect waits for the next packet and checks its op and ports.
func (g *guest) expect(op Op, hostPort, guestPort uint32) packet {
	g.t.Helper()
	p := g.recv()
	if p.h.Op != op || p.h.SrcPort != hostPort || p.h.DstPort != guestPort {
		g.t.Fatalf("got %v, want %v %d->%d", p.h, op, hostPort, guestPort)
	}
	return p
}

// quiet checks that the device sends nothing for a while.
func (g *guest) quiet(d time.Duration) {
	g.t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if p, ok := g.tryRecv(); ok {
			g.t.Fatalf("unexpected packet %v", p.h)
		}
		time.Sleep(time.Millisecond)
	}
}

// expectFail waits for the device to report a guest error.
func (g *guest) expectFail() error {
	g.t.Helper()
	select {
	case <-g.failed:
	case <-time.After(waitTime):
		g.t.Fatal("device did not fail")
	}
	f := g.failures()
	return f[len(f)-1]
}

// connectFromGuest opens a guest connection from guest port src to a
// host Listener on dst and returns the host end.
func (g *guest) connectFromGuest(l *Listener, src, dst uint32) *Conn {
	g.t.Helper()
	g.send(hdr(OpRequest, src, dst), nil)
	g.expect(OpResponse, dst, src)
	c, err := l.AcceptConn()
	if err != nil {
		g.t.Fatal(err)
	}
	return c
}

// dialFromHost dials guest port port and answers the REQUEST as a guest
// listener does; it returns the host end and its host port.
func (g *guest) dialFromHost(port uint32) (*Conn, uint32) {
	g.t.Helper()
	type res struct {
		c   *Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := g.dev.Dial(context.Background(), port)
		ch <- res{c, err}
	}()
	p := g.recv()
	if p.h.Op != OpRequest || p.h.DstPort != port {
		g.t.Fatalf("got %v, want a REQUEST to %d", p.h, port)
	}
	g.send(hdr(OpResponse, port, p.h.SrcPort), nil)
	r := <-ch
	if r.err != nil {
		g.t.Fatalf("Dial: %v", r.err)
	}
	return r.c, p.h.SrcPort
}

func (g *guest) counters() Counters { return g.dev.Counters() }

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func mustEqual(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes, want %d (first difference at %d)", what, len(got), len(want), firstDiff(got, want))
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

var _ = fmt.Sprintf

func countGoroutines() int { return runtime.NumGoroutine() }
