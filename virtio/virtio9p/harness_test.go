package virtio9p

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

const testMem = 16 << 20

type fakeIRQ struct{ ch chan int }

func (f *fakeIRQ) Signal(q int) error {
	select {
	case f.ch <- q:
	default:
	}
	return nil
}

// harness is a device serving a host directory, with a mock driver.
type harness struct {
	t      testing.TB
	dev    *Device
	fs     *hostfs.FS
	mem    *guestmem.Memory
	drv    *testdriver.Driver
	q      *queue.Queue // the queue given to the device at activation
	irq    *fakeIRQ
	mu     sync.Mutex
	fails  []error
	failed chan struct{}
}

func newHarness(t testing.TB, dir string, opts hostfs.Options, cfg Config) *harness {
	t.Helper()
	fs, err := hostfs.New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	cfg.FS = fs
	return newHarnessFS(t, fs, cfg)
}

// newHarnessFS is newHarness for a device serving cfg.FS (fs, or a tree
// wrapping it).
func newHarnessFS(t testing.TB, fs *hostfs.FS, cfg Config) *harness {
	t.Helper()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	if cfg.Tag == "" {
		cfg.Tag = "share"
	}
	dev, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dev: dev, fs: fs, mem: mem, irq: &fakeIRQ{ch: make(chan int, 16)}, failed: make(chan struct{}, 64)}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	h.activate()
	return h
}

func (h *harness) activate() {
	h.t.Helper()
	feat := h.dev.Features()
	h.drv = testdriver.New(h.mem, h.dev.MaxQueueSize(), 0x1000, testMem, 0)
	h.drv.EventIdx = feat&virtio.FEventIdx != 0
	q, err := queue.New(h.mem, h.drv.L, virtio.QueueOptions(feat, h.dev.MaxQueueSize()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.q = q
	err = h.dev.Activate(context.Background(), virtio.Activation{
		Mem: h.mem, Features: feat, Queues: []*queue.Queue{q}, Interrupt: h.irq,
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

// chain is a request as a driver lays it out: the T-message split into
// readable segments of split bytes, and wlen writable bytes in segments of
// wsplit bytes (0: one segment each).
type chain struct {
	msg      []byte
	wlen     int
	split    int
	wsplit   int
	indirect bool
}

// submit lays c out and makes it available; it returns the writable GPA.
func (h *harness) submit(c chain) uint64 {
	d := h.drv
	var segs []testdriver.Seg
	add := func(gpa uint64, n int, write bool) {
		split := c.split
		if write {
			split = c.wsplit
		}
		if split <= 0 {
			split = 1 << 30
		}
		for off := 0; off < n; off += split {
			segs = append(segs, testdriver.Seg{Addr: gpa + uint64(off), Len: uint32(min(split, n-off)), Write: write})
		}
	}
	if len(c.msg) > 0 {
		a := d.Alloc(uint64(len(c.msg)), 8)
		if err := h.mem.WriteAt(c.msg, a); err != nil {
			h.t.Fatal(err)
		}
		add(a, len(c.msg), false)
	}
	var w uint64
	if c.wlen > 0 {
		w = d.Alloc(uint64(c.wlen), 8)
		add(w, c.wlen, true)
	}
	var ok bool
	if c.indirect {
		_, ok = d.AddIndirect(segs...)
	} else {
		_, ok = d.Add(segs...)
	}
	if !ok {
		h.t.Fatalf("no room for %d descriptors", len(segs))
	}
	return w
}

// wait returns the next used element, failing the test on a device
// failure or after 10 s.
func (h *harness) wait() (id, n uint32) {
	h.t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if id, n, ok := h.drv.Used(); ok {
			return id, n
		}
		h.drv.EnableInterrupts()
		if id, n, ok := h.drv.Used(); ok {
			return id, n
		}
		select {
		case <-h.irq.ch:
		case <-h.failed:
			h.mu.Lock()
			defer h.mu.Unlock()
			h.t.Fatalf("device failed: %v", h.fails)
		case <-deadline:
			h.t.Fatal("no completion within 10s")
		}
	}
}

// do runs one chain and returns the reply bytes.
func (h *harness) do(c chain) []byte {
	h.t.Helper()
	h.drv.ResetHeap()
	w := h.submit(c)
	h.dev.Notify(0)
	_, n := h.wait()
	b, err := h.mem.Slice(w, uint64(n))
	if err != nil {
		h.t.Fatal(err)
	}
	return append([]byte(nil), b...)
}

// expectFail submits c and waits for the device to fail.
func (h *harness) expectFail(c chain) error {
	h.t.Helper()
	h.drv.ResetHeap()
	h.submit(c)
	h.dev.Notify(0)
	select {
	case <-h.failed:
	case <-time.After(10 * time.Second):
		h.t.Fatal("device did not fail within 10s")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fails[len(h.fails)-1]
}

// guestConn is a 9P client's byte stream over the mock driver: each
// T-message the client writes goes out as one chain (split into segments
// of split bytes, with wlen writable bytes), and the reply is what the
// client reads next. One request at a time.
type guestConn struct {
	h     *harness
	split int
	wlen  int

	mu     sync.Mutex
	cond   *sync.Cond
	wbuf   []byte
	rbuf   []byte
	closed bool // the test ended: the client's finalizers must not reach the harness
}

func (h *harness) client(split, wlen int, msize uint32) *p9.Client {
	h.t.Helper()
	g := &guestConn{h: h, split: split, wlen: wlen}
	g.cond = sync.NewCond(&g.mu)
	c, err := p9.NewClient(g, p9.WithMessageSize(msize))
	if err != nil {
		h.t.Fatalf("NewClient: %v", err)
	}
	h.t.Cleanup(func() { c.Close() }) // before the harness's: cleanups run last first
	return c
}

func (g *guestConn) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return 0, net.ErrClosed
	}
	g.wbuf = append(g.wbuf, p...)
	for len(g.wbuf) >= 4 {
		size := int(binary.LittleEndian.Uint32(g.wbuf))
		if len(g.wbuf) < size {
			break
		}
		reply := g.h.do(chain{msg: g.wbuf[:size], wlen: g.wlen, split: g.split})
		g.wbuf = g.wbuf[size:]
		g.rbuf = append(g.rbuf, reply...)
		g.cond.Broadcast()
	}
	return len(p), nil
}

func (g *guestConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.rbuf) == 0 {
		if g.closed {
			return 0, io.EOF
		}
		g.cond.Wait()
	}
	n := copy(p, g.rbuf)
	g.rbuf = g.rbuf[n:]
	return n, nil
}

func (g *guestConn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.cond.Broadcast()
	g.mu.Unlock()
	return nil
}

// msg encodes a T-message by hand: type, tag, then fields (uint8, uint16,
// uint32, uint64 little-endian; string as 9P's len[2] bytes; []byte raw).
func msg(typ byte, tag uint16, fields ...any) []byte {
	b := make([]byte, hdrLen)
	b[hdrType] = typ
	binary.LittleEndian.PutUint16(b[hdrTag:], tag)
	for _, f := range fields {
		switch v := f.(type) {
		case uint8:
			b = append(b, v)
		case uint16:
			b = binary.LittleEndian.AppendUint16(b, v)
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, v)
		case uint64:
			b = binary.LittleEndian.AppendUint64(b, v)
		case string:
			b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
			b = append(b, v...)
		case []byte:
			b = append(b, v...)
		default:
			panic("msg: bad field")
		}
	}
	binary.LittleEndian.PutUint32(b[hdrSize:], uint32(len(b)))
	return b
}

// Message types used by hand-built requests (more are in spec.go).
const (
	tRlopen = 13
	tRflush = 109
)

// reply splits a reply into type, tag and body, checking its size field.
func reply(t testing.TB, b []byte) (byte, uint16, []byte) {
	t.Helper()
	if len(b) < hdrLen || int(binary.LittleEndian.Uint32(b)) != len(b) {
		t.Fatalf("reply of %d bytes with size field %d", len(b), binary.LittleEndian.Uint32(b))
	}
	return b[hdrType], binary.LittleEndian.Uint16(b[hdrTag:]), b[hdrLen:]
}

// version negotiates msize by hand.
func (h *harness) version(msize uint32) {
	h.t.Helper()
	typ, _, _ := reply(h.t, h.do(chain{msg: msg(tTversion, noTag, msize, "9P2000.L"), wlen: 64}))
	if typ != tRversion {
		h.t.Fatalf("Tversion answered with type %d", typ)
	}
}
