package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

const (
	testMem  = 16 << 20
	pairMem  = 2 << 20          // guest memory for each queue pair after the first: rings and buffers
	waitTime = 10 * time.Second // generous bound on every wait; never a speed goal
)

var (
	guestMAC = [6]byte{0x02, 'c', 'r', 0, 7, 2}
	hostMAC  = [6]byte{0x02, 'c', 'r', 0, 7, 1}
)

// fakeIRQ records interrupts and wakes waiters.
type fakeIRQ struct {
	ch    chan int
	count [2*MaxQueuePairs + 1]atomic.Int64
}

func (f *fakeIRQ) Signal(q int) error {
	if q >= 0 && q < len(f.count) {
		f.count[q].Add(1)
	}
	select {
	case f.ch <- q:
	default:
	}
	return nil
}

// testBackend is the device's end of a SOCK_SEQPACKET socket pair (one
// frame per read and write, like a TAP); the test holds the other end. It
// can pretend to support offloads and records what the device asks for.
type testBackend struct {
	*FileBackend
	offloads Offload
	reads    atomic.Int64 // frames the device has read
	mu       sync.Mutex
	setOff   []Offload
}

func (b *testBackend) ReadFrame(p []byte, wait bool) (int, error) {
	n, err := b.FileBackend.ReadFrame(p, wait)
	if err == nil {
		b.reads.Add(1)
	}
	return n, err
}

func (b *testBackend) Offloads() Offload { return b.offloads }

func (b *testBackend) SetOffload(o Offload) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if o&^b.offloads != 0 {
		return fmt.Errorf("offloads %#x not supported", o)
	}
	b.setOff = append(b.setOff, o)
	return nil
}

// loseOffloads makes later SetOffload calls refuse what o lacks.
func (b *testBackend) loseOffloads(o Offload) {
	b.mu.Lock()
	b.offloads = o
	b.mu.Unlock()
}

func (b *testBackend) lastOffload() (Offload, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.setOff) == 0 {
		return 0, false
	}
	return b.setOff[len(b.setOff)-1], true
}

// socketPair returns two pollable ends of a SOCK_SEQPACKET pair.
func socketPair(tb testing.TB) (dev, peer *os.File) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	// Room for a few 64 KiB frames each way.
	for _, fd := range fds {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)
	}
	return os.NewFile(uintptr(fds[0]), "dev-end"), os.NewFile(uintptr(fds[1]), "peer-end")
}

func newTestBackend(tb testing.TB, vnet bool, off Offload) (*testBackend, *os.File) {
	tb.Helper()
	devEnd, peer := socketPair(tb)
	fb, err := NewFileBackend(devEnd, vnet)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { peer.Close() })
	return &testBackend{FileBackend: fb, offloads: off}, peer
}

type opts struct {
	vnet     bool
	offloads Offload
	handler  FrameHandler
	mtu      int
	drop     uint64 // offered features the driver does not accept
	qsize    uint16
	// socket builds the backend with NewSocketBackend from a blocking
	// SOCK_SEQPACKET pair, as a caller handing over a descriptor would.
	socket bool
	// pairs > 1 gives the device a MultiQueue backend of that many socket
	// pairs (testMQ), so it offers MQ.
	pairs int
	// takeKicks hands the device an eventfd per transmit queue before the
	// activation (virtio.KickWaiter), as the PCI transport does; kickTx
	// writes it as KVM does on a guest kick.
	takeKicks bool
}

// testMQ is a MultiQueue backend: queue 0 is the embedded testBackend,
// queue i the device's end of socket pair i. It records which queues the
// device enabled and can be made to refuse.
type testMQ struct {
	*testBackend
	extra []*FileBackend // queues 1..
	peers []*os.File     // the test's ends, by queue (peers[0] is queue 0's)

	mu        sync.Mutex
	on        []bool
	refuse    error // SetQueueEnabled's answer when set
	enableOps int
}

func newTestMQ(tb testing.TB, n int, vnet bool, off Offload) *testMQ {
	tb.Helper()
	be, peer := newTestBackend(tb, vnet, off)
	m := &testMQ{testBackend: be, peers: []*os.File{peer}, on: make([]bool, n)}
	for i := range n {
		m.on[i] = true
		if i == 0 {
			continue
		}
		devEnd, p := socketPair(tb)
		fb, err := NewFileBackend(devEnd, vnet)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { p.Close() })
		m.extra, m.peers = append(m.extra, fb), append(m.peers, p)
	}
	return m
}

func (m *testMQ) NumQueues() int { return len(m.extra) + 1 }

func (m *testMQ) Queue(i int) Queue {
	if i == 0 {
		return m.testBackend
	}
	return m.extra[i-1]
}

func (m *testMQ) SetQueueEnabled(i int, on bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if i < 1 || i >= len(m.on) {
		return fmt.Errorf("queue %d of %d", i, len(m.on))
	}
	if m.refuse != nil {
		return m.refuse
	}
	m.on[i] = on
	m.enableOps++
	return nil
}

// enabled returns how many queues are enabled, checking they are a prefix.
func (m *testMQ) enabled(tb testing.TB) int {
	tb.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for i, on := range m.on {
		if on {
			if i != n {
				tb.Fatalf("backend queues enabled %v: not the first ones", m.on)
			}
			n++
		}
	}
	return n
}

func (m *testMQ) Close() error {
	err := m.testBackend.Close()
	for _, q := range m.extra {
		err = errors.Join(err, q.Close())
	}
	return err
}

// harness is a device on a socket pair with a mock driver per queue in fake
// guest memory.
type harness struct {
	t    testing.TB
	dev  *Device
	be   *testBackend
	peer *os.File
	mem  *guestmem.Memory
	rxd  *testdriver.Driver
	txd  *testdriver.Driver
	ctd  *testdriver.Driver // the control queue's; nil without CTRL_VQ
	irq  *fakeIRQ
	feat uint64
	mq   *testMQ // with opts.pairs > 1
	// rxq and txq are every pair's drivers (rxq[0] is rxd, txq[0] txd); ctrlQ
	// is the control queue's index.
	rxq, txq []*testdriver.Driver
	ctrlQ    int
	kickFDs  []int // with opts.takeKicks: each pair's transmit eventfd
	rxKicks  []int // with opts.takeKicks: each pair's receive eventfd, -1 where the device refuses it (queue 2)

	mu     sync.Mutex
	fails  []error
	failed chan struct{}
	rxBufs map[uint16]uint64 // head → buffer GPA
}

func newHarness(tb testing.TB, o opts) *harness {
	tb.Helper()
	// mmap'd like real guest RAM: the race detector does not track it, as
	// it cannot see the ring protocol's fences. Unmapped after the device
	// stops (cleanups run last-in first-out).
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem + uint64(max(o.pairs-1, 0))*pairMem})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	be, peer := newTestBackend(tb, o.vnet, o.offloads)
	if o.socket {
		be, peer = newSocketTestBackend(tb)
	}
	var backend Backend = be
	var mq *testMQ
	if o.pairs > 1 {
		be.Close()
		mq = newTestMQ(tb, o.pairs, o.vnet, o.offloads)
		be, peer, backend = mq.testBackend, mq.peers[0], mq
	}
	dev, err := New(Config{Backend: backend, MAC: guestMAC[:], MTU: o.mtu, QueueSize: o.qsize, Handler: o.handler})
	if err != nil {
		tb.Fatal(err)
	}
	var kickFDs, rxKicks []int
	if o.takeKicks {
		offered, _ := dev.QueuePairs()
		for i := range offered {
			fd := newEventfd(tb) // closed after the device (cleanups run last-in first-out)
			if !dev.TakeKick(2*i+1, fd) {
				tb.Fatalf("the device refused transmit queue %d's eventfd", 2*i+1)
			}
			kickFDs = append(kickFDs, fd)
			fd = newEventfd(tb)
			if took := dev.TakeKick(2*i, fd); took != (i != 1) {
				tb.Fatalf("TakeKick(receive queue %d) = %v", 2*i, took)
			} else if !took {
				fd = -1
			}
			rxKicks = append(rxKicks, fd)
		}
	}
	tb.Cleanup(func() {
		if err := dev.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	h := &harness{kickFDs: kickFDs, rxKicks: rxKicks, t: tb, dev: dev, be: be, mq: mq, peer: peer, mem: mem, irq: &fakeIRQ{ch: make(chan int, 64)},
		failed: make(chan struct{}, 16), feat: dev.Features() &^ o.drop}
	h.activate()
	return h
}

// activate lays out fresh rings and activates the device on them.
func (h *harness) activate() {
	h.t.Helper()
	h.rxBufs = map[uint16]uint64{}
	qs := h.dev.MaxQueueSize()
	h.rxd = testdriver.New(h.mem, qs, 0x1000, testMem/2-1<<20, 0)
	h.txd = testdriver.New(h.mem, qs, testMem/2, testMem, 0)
	h.ctd = nil
	h.rxq, h.txq = []*testdriver.Driver{h.rxd}, []*testdriver.Driver{h.txd}
	drivers := make([]*testdriver.Driver, h.dev.NumQueues())
	drivers[RxQueue], drivers[TxQueue] = h.rxd, h.txd
	h.ctrlQ = CtrlQueue
	if h.feat&FMQ != 0 {
		offered, _ := h.dev.QueuePairs()
		for i := 1; i < offered; i++ {
			base := testMem + uint64(i-1)*pairMem
			rx := testdriver.New(h.mem, qs, base, base+pairMem/2, 0)
			tx := testdriver.New(h.mem, qs, base+pairMem/2, base+pairMem, 0)
			h.rxq, h.txq = append(h.rxq, rx), append(h.txq, tx)
			drivers[2*i], drivers[2*i+1] = rx, tx
		}
		h.ctrlQ = 2 * offered
	}
	if h.feat&FCtrlVQ != 0 {
		h.ctd = testdriver.New(h.mem, qs, testMem/2-1<<20, testMem/2, 0)
		drivers[h.ctrlQ] = h.ctd
	}
	var queues []*queue.Queue
	for _, d := range drivers {
		if d == nil {
			queues = append(queues, nil)
			continue
		}
		d.EventIdx = h.feat&virtio.FEventIdx != 0
		q, err := queue.New(h.mem, d.L, virtio.QueueOptions(h.feat, qs))
		if err != nil {
			h.t.Fatal(err)
		}
		queues = append(queues, q)
	}
	err := h.dev.Activate(context.Background(), virtio.Activation{
		Mem: h.mem, Features: h.feat, Queues: queues, Interrupt: h.irq,
		Fail: func(err error) {
			h.mu.Lock()
			h.fails = append(h.fails, err)
			h.mu.Unlock()
			select {
			case h.failed <- struct{}{}:
			default:
			}
		},
	})
	if err != nil {
		h.t.Fatalf("Activate: %v", err)
	}
}

func (h *harness) failures() []error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]error(nil), h.fails...)
}

// postRx makes a receive buffer of size bytes available, split into
// descriptors of at most seg bytes (0: one descriptor), without a kick.
func (h *harness) postRx(size int, seg int) uint16 {
	h.t.Helper()
	gpa := h.rxd.Alloc(uint64(size), 16)
	if err := h.mem.Zero(gpa, uint64(size)); err != nil {
		h.t.Fatal(err)
	}
	if seg == 0 {
		seg = size
	}
	var segs []testdriver.Seg
	for off := 0; off < size; off += seg {
		segs = append(segs, testdriver.Seg{Addr: gpa + uint64(off), Len: uint32(min(seg, size-off)), Write: true})
	}
	head, ok := h.rxd.Add(segs...)
	if !ok {
		h.t.Fatal("receive queue full")
	}
	h.rxBufs[head] = gpa
	return head
}

// refill posts n buffers of size bytes and kicks the receive queue.
func (h *harness) refill(n, size int) {
	h.t.Helper()
	for range n {
		h.postRx(size, 0)
	}
	h.dev.Notify(RxQueue)
}

// wait blocks until ok returns true, re-checking after every interrupt. It
// enables interrupts (and re-checks) first, as a driver does before it
// sleeps.
func (h *harness) wait(what string, ok func() bool) {
	h.t.Helper()
	deadline := time.NewTimer(waitTime)
	defer deadline.Stop()
	for {
		if ok() {
			return
		}
		for i := range h.rxq {
			h.rxq[i].EnableInterrupts()
			h.txq[i].EnableInterrupts()
		}
		if h.ctd != nil {
			h.ctd.EnableInterrupts()
		}
		if ok() {
			return
		}
		select {
		case <-h.irq.ch:
		case <-h.failed:
			h.t.Fatalf("waiting for %s: device failed: %v", what, h.failures())
		case <-deadline.C:
			h.t.Fatalf("%s did not happen within %v", what, waitTime)
		}
	}
}

// poll waits for a condition no interrupt announces (the device's own
// progress), checking every millisecond.
func (h *harness) poll(what string, ok func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitTime)
	for !ok() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s did not happen within %v", what, waitTime)
		}
		time.Sleep(time.Millisecond)
	}
}

type rxPacket struct {
	hdr        header
	numBuffers uint16
	frame      []byte
	usedLen    uint32
}

// takeRx waits for the next filled receive buffer and returns its contents.
func (h *harness) takeRx() rxPacket {
	h.t.Helper()
	var p rxPacket
	h.wait("a received frame", func() bool {
		id, n, ok := h.rxd.Used()
		if !ok {
			return false
		}
		gpa, known := h.rxBufs[uint16(id)]
		if !known {
			h.t.Fatalf("used ring returned unknown head %d", id)
		}
		delete(h.rxBufs, uint16(id))
		if n < HeaderLen {
			h.t.Fatalf("used length %d shorter than the header", n)
		}
		b, err := h.mem.Slice(gpa, uint64(n))
		if err != nil {
			h.t.Fatal(err)
		}
		b = append([]byte(nil), b...)
		p = rxPacket{hdr: decodeHeader(b), numBuffers: binary.LittleEndian.Uint16(b[hdrNumBuffers:]), frame: b[HeaderLen:], usedLen: n}
		return true
	})
	return p
}

// sendTx makes one transmit chain of hdr+frame available, split into
// descriptors of at most seg bytes (0: header and frame separately), and
// kicks the transmit queue.
func (h *harness) sendTx(hdr header, frame []byte, seg int) {
	h.t.Helper()
	pkt := make([]byte, HeaderLen+len(frame))
	hdr.encode(pkt, 0)
	copy(pkt[HeaderLen:], frame)
	h.sendRawTx(pkt, seg)
}

func (h *harness) sendRawTx(pkt []byte, seg int) {
	h.t.Helper()
	gpa := h.txd.Alloc(uint64(len(pkt)), 16)
	if err := h.mem.WriteAt(pkt, gpa); err != nil {
		h.t.Fatal(err)
	}
	var segs []testdriver.Seg
	if seg == 0 {
		segs = append(segs, testdriver.Seg{Addr: gpa, Len: uint32(min(HeaderLen, len(pkt)))})
		if len(pkt) > HeaderLen {
			segs = append(segs, testdriver.Seg{Addr: gpa + HeaderLen, Len: uint32(len(pkt) - HeaderLen)})
		}
	} else {
		for off := 0; off < len(pkt); off += seg {
			segs = append(segs, testdriver.Seg{Addr: gpa + uint64(off), Len: uint32(min(seg, len(pkt)-off))})
		}
	}
	if _, ok := h.txd.Add(segs...); !ok {
		h.t.Fatal("transmit queue full")
	}
	h.dev.Notify(TxQueue)
}

// waitTxDone waits until n more transmit chains have been completed.
func (h *harness) waitTxDone(n int) {
	h.t.Helper()
	got := 0
	h.wait(fmt.Sprintf("%d transmit completions", n), func() bool {
		for got < n {
			_, l, ok := h.txd.Used()
			if !ok {
				return false
			}
			if l != 0 {
				h.t.Errorf("transmit used length %d, want 0", l)
			}
			got++
		}
		return true
	})
}

// expectFail waits for the device to report a guest error.
func (h *harness) expectFail() error {
	h.t.Helper()
	select {
	case <-h.failed:
	case <-time.After(waitTime):
		h.t.Fatal("device did not fail")
	}
	f := h.failures()
	return f[len(f)-1]
}

// peerRead returns the next frame the device wrote to the backend.
func (h *harness) peerRead() []byte {
	h.t.Helper()
	buf := make([]byte, HeaderLen+MaxFrameLen+1)
	h.peer.SetReadDeadline(time.Now().Add(waitTime))
	n, err := h.peer.Read(buf)
	if err != nil {
		h.t.Fatalf("reading the backend's peer: %v", err)
	}
	return buf[:n]
}

// peerWrite sends a frame from the host side to the device.
func (h *harness) peerWrite(frame []byte) {
	h.t.Helper()
	h.peer.SetWriteDeadline(time.Now().Add(waitTime))
	if _, err := h.peer.Write(frame); err != nil {
		h.t.Fatalf("writing the backend's peer: %v", err)
	}
}

func isDeadline(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func timeNowPlus(d time.Duration) time.Time { return time.Now().Add(d) }

func errClosed() error { return os.ErrClosed }

func osFile(fd int) *os.File { return os.NewFile(uintptr(fd), "dev-end") }
