package blk

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

const testMem = 8 << 20

// fakeIRQ counts interrupts per queue and wakes waiters.
type fakeIRQ struct {
	ch chan int
}

func (f *fakeIRQ) Signal(q int) error {
	select {
	case f.ch <- q:
	default:
	}
	return nil
}

// harness is a device on a temp image with a mock driver per queue.
type harness struct {
	t       testing.TB
	path    string
	dev     *Device
	mem     *guestmem.Memory
	drivers []*testdriver.Driver
	irq     *fakeIRQ
	feat    uint64
	mu      sync.Mutex
	fails   []error
	failed  chan struct{}
}

// tempImage creates a file of size bytes filled with a pattern.
func tempImage(t testing.TB, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(i/SectorSize) ^ byte(i)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newHarness opens cfg (Path filled in by the caller) and activates it with
// the offered features minus drop.
func newHarness(t testing.TB, cfg Config, drop uint64) *harness {
	t.Helper()
	// mmap'd like real guest RAM: the race detector does not track it, as
	// it cannot see the ring protocol's fences. Unmapped after the device
	// stops (cleanups run last-in first-out).
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	dev, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	h := &harness{t: t, path: cfg.Path, dev: dev, mem: mem, irq: &fakeIRQ{ch: make(chan int, 16)}, failed: make(chan struct{}, 16)}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	h.feat = dev.Features() &^ drop
	h.activate()
	return h
}

func (h *harness) activate() {
	h.t.Helper()
	n := h.dev.NumQueues()
	h.drivers = nil
	var qs []*queue.Queue
	per := uint64(testMem / n)
	for i := 0; i < n; i++ {
		d := testdriver.New(h.mem, h.dev.MaxQueueSize(), uint64(i)*per+0x1000, uint64(i+1)*per, 0)
		d.EventIdx = h.feat&virtio.FEventIdx != 0
		q, err := queue.New(h.mem, d.L, virtio.QueueOptions(h.feat, h.dev.MaxQueueSize()))
		if err != nil {
			h.t.Fatal(err)
		}
		h.drivers = append(h.drivers, d)
		qs = append(qs, q)
	}
	err := h.dev.Activate(context.Background(), virtio.Activation{
		Mem: h.mem, Features: h.feat, Queues: qs, Interrupt: h.irq,
		Fail: func(err error) {
			h.mu.Lock()
			h.fails = append(h.fails, err)
			h.mu.Unlock()
			h.failed <- struct{}{}
		},
	})
	if err != nil {
		h.t.Fatalf("Activate: %v", err)
	}
}

// req describes one request as a driver builds it.
type req struct {
	typ      uint32
	sector   uint64
	out      []byte // data after the header (device-readable)
	in       int    // writable data bytes before the status byte
	noStatus bool   // leave out the status byte
	hdrLen   uint32 // header length; 0 means 16
	segSize  int    // split data into segments of this size; 0 means 4096
	indirect bool
	queue    int
}

type result struct {
	status  byte
	in      []byte
	usedLen uint32
}

// layout writes r's header, and its out data, into guest memory from d's
// heap and returns its descriptors: header, data segments of r.segSize
// (default 4 KiB) starting skew bytes past an align boundary, then the
// status byte (0xee until the device writes it) unless r.noStatus. The in
// buffer is zeroed.
func layout(t testing.TB, mem *guestmem.Memory, d *testdriver.Driver, r req, align, skew uint64) (segs []testdriver.Seg, statusGPA, inGPA uint64) {
	t.Helper()
	seg := r.segSize
	if seg == 0 {
		seg = 4096
	}
	hl := r.hdrLen
	if hl == 0 {
		hl = hdrSize
	}
	hdr := d.Alloc(hdrSize, 16)
	var hb [hdrSize]byte
	binary.LittleEndian.PutUint32(hb[hdrType:], r.typ)
	binary.LittleEndian.PutUint64(hb[hdrSector:], r.sector)
	if err := mem.WriteAt(hb[:], hdr); err != nil {
		t.Fatal(err)
	}
	segs = []testdriver.Seg{{Addr: hdr, Len: hl}}
	split := func(gpa uint64, n int, write bool) {
		for off := 0; off < n; off += seg {
			segs = append(segs, testdriver.Seg{Addr: gpa + uint64(off), Len: uint32(min(seg, n-off)), Write: write})
		}
	}
	if len(r.out) > 0 {
		a := d.Alloc(uint64(len(r.out))+skew, align) + skew
		if err := mem.WriteAt(r.out, a); err != nil {
			t.Fatal(err)
		}
		split(a, len(r.out), false)
	}
	if r.in > 0 {
		inGPA = d.Alloc(uint64(r.in)+skew, align) + skew
		if err := mem.Zero(inGPA, uint64(r.in)); err != nil {
			t.Fatal(err)
		}
		split(inGPA, r.in, true)
	}
	if !r.noStatus {
		statusGPA = d.Alloc(1, 1)
		mem.WriteAt([]byte{0xee}, statusGPA)
		segs = append(segs, testdriver.Seg{Addr: statusGPA, Len: 1, Write: true})
	}
	return segs, statusGPA, inGPA
}

// build lays the request out in guest memory and makes it available.
func (h *harness) build(r req) (statusGPA, inGPA uint64) {
	d := h.drivers[r.queue]
	d.ResetHeap()
	segs, statusGPA, inGPA := layout(h.t, h.mem, d, r, 512, 0)
	var ok bool
	if r.indirect {
		_, ok = d.AddIndirect(segs...)
	} else {
		_, ok = d.Add(segs...)
	}
	if !ok {
		h.t.Fatalf("no room in the queue for %d descriptors", len(segs))
	}
	return statusGPA, inGPA
}

// do runs one request through the device and waits for its completion.
func (h *harness) do(r req) result {
	h.t.Helper()
	statusGPA, inGPA := h.build(r)
	d := h.drivers[r.queue]
	d.EnableInterrupts()
	h.dev.Notify(r.queue)
	deadline := time.After(10 * time.Second)
	for {
		if _, n, ok := d.Used(); ok {
			res := result{usedLen: n}
			if statusGPA != 0 {
				b, _ := h.mem.Slice(statusGPA, 1)
				res.status = b[0]
			}
			if r.in > 0 {
				b, _ := h.mem.Slice(inGPA, uint64(r.in))
				res.in = append([]byte(nil), b...)
			}
			return res
		}
		select {
		case <-h.irq.ch:
		case <-h.failed:
			h.t.Fatalf("device failed: %v", h.fails)
		case <-deadline:
			h.t.Fatal("request not completed within 10s")
		}
	}
}

// expectFail runs a request that must fail the device.
func (h *harness) expectFail(r req) error {
	h.t.Helper()
	h.build(r)
	h.dev.Notify(r.queue)
	select {
	case <-h.failed:
	case <-time.After(10 * time.Second):
		h.t.Fatal("device did not fail within 10s")
	}
	if _, _, ok := h.drivers[r.queue].Used(); ok {
		h.t.Fatal("a request that failed the device was completed")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails[len(h.fails)-1]
}

func testSeg(addr uint64, n uint32, write bool) testdriver.Seg {
	return testdriver.Seg{Addr: addr, Len: n, Write: write}
}
