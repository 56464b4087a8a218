package virtio9p

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// gateFS is a hostfs tree whose file reads wait at a gate until the test
// opens it; each read arriving there is signalled on reading.
type gateFS struct {
	*hostfs.FS
	gate    chan struct{}
	once    sync.Once
	reading chan struct{}
}

// open lets reads go on (and stay open).
func (g *gateFS) open() { g.once.Do(func() { close(g.gate) }) }

// gateHarness is a harness on a gateFS whose gate opens at the latest
// when the test ends, before the device is closed (a failed test must not
// leave a read blocking Close).
func gateHarness(t *testing.T, cfg Config) (*harness, *gateFS) {
	t.Helper()
	g := newGateFS(t, shareDir(t))
	cfg.FS = g
	h := newHarnessFS(t, g.FS, cfg)
	t.Cleanup(g.open)
	return h, g
}

func newGateFS(t *testing.T, dir string) *gateFS {
	t.Helper()
	fs, err := hostfs.New(dir, hostfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return &gateFS{FS: fs, gate: make(chan struct{}), reading: make(chan struct{}, 16)}
}

func (g *gateFS) Attach() (p9.File, error) {
	f, err := g.FS.Attach()
	if err != nil {
		return nil, err
	}
	return gateFile{f, g}, nil
}

type gateFile struct {
	p9.File
	g *gateFS
}

func (f gateFile) Walk(names []string) ([]p9.QID, p9.File, error) {
	q, nf, err := f.File.Walk(names)
	if nf != nil {
		nf = gateFile{nf, f.g}
	}
	return q, nf, err
}

func (f gateFile) WalkGetAttr(names []string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	q, nf, m, a, err := f.File.WalkGetAttr(names)
	if nf != nil {
		nf = gateFile{nf, f.g}
	}
	return q, nf, m, a, err
}

func (f gateFile) ReadAt(p []byte, off int64) (int, error) {
	f.g.reading <- struct{}{}
	<-f.g.gate
	return f.File.ReadAt(p, off)
}

// post makes a request available without waiting for it (and without
// reusing the heap of requests in flight, as do does).
func (h *harness) post(m []byte, wlen int) (head uint16, w uint64) {
	h.t.Helper()
	a := h.drv.Alloc(uint64(len(m)), 8)
	if err := h.mem.WriteAt(m, a); err != nil {
		h.t.Fatal(err)
	}
	w = h.drv.Alloc(uint64(wlen), 8)
	head, ok := h.drv.Add(testdriver.Seg{Addr: a, Len: uint32(len(m))}, testdriver.Seg{Addr: w, Len: uint32(wlen), Write: true})
	if !ok {
		h.t.Fatal("no room in the queue")
	}
	return head, w
}

// replyAt returns the reply of n bytes at w.
func (h *harness) replyAt(w uint64, n uint32) []byte {
	h.t.Helper()
	b, err := h.mem.Slice(w, uint64(n))
	if err != nil {
		h.t.Fatal(err)
	}
	return append([]byte(nil), b...)
}

// noneUsed fails the test if the device completes anything within d.
func (h *harness) noneUsed(d time.Duration, what string) {
	h.t.Helper()
	time.Sleep(d)
	if id, _, ok := h.drv.Used(); ok {
		h.t.Fatalf("%s: chain %d completed", what, id)
	}
}

// connPaused waits until the connection has stopped taking chains.
func (h *harness) connPaused() {
	h.t.Helper()
	c := h.dev.active.Load()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		p := c.paused
		c.mu.Unlock()
		if p {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatal("the connection did not pause")
		}
	}
}

// mountFile versions, attaches fid 1 and opens d/b (contents "bee") as
// fid 2, by hand.
func (h *harness) mountFile() {
	h.t.Helper()
	h.version(8192)
	if typ, _, _ := reply(h.t, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})); typ != tRattach {
		h.t.Fatalf("Tattach answered with type %d", typ)
	}
	if typ, _, _ := reply(h.t, h.do(chain{msg: msg(tTwalk, 1, uint32(1), uint32(2), uint16(2), "d", "b"), wlen: 64})); typ != tRwalk {
		h.t.Fatalf("Twalk answered with type %d", typ)
	}
	if typ, _, _ := reply(h.t, h.do(chain{msg: msg(tTlopen, 1, uint32(2), uint32(0)), wlen: 64})); typ != tRlopen {
		h.t.Fatalf("Tlopen answered with type %d", typ)
	}
}

// readBee reads fid 2 through the chain in h.do and checks it holds "bee".
func (h *harness) readBee() {
	h.t.Helper()
	typ, _, body := reply(h.t, h.do(chain{msg: msg(tTread, 3, uint32(2), uint64(0), uint32(100)), wlen: 200}))
	if typ != tRread || len(body) < 4 || string(body[4:]) != "bee" {
		h.t.Fatalf("Tread answered with type %d body %q", typ, body)
	}
}

// TestPauseWaitsForRequestInFlight: Pause returns only once a Tread the
// server is serving is answered; a Twalk kicked during the pause is not
// taken until Resume, which answers it; the session (fids, open file)
// works on after Resume.
func TestPauseWaitsForRequestInFlight(t *testing.T) {
	h, g := gateHarness(t, Config{})
	h.mountFile()

	h.drv.ResetHeap()
	rd, rw := h.post(msg(tTread, 5, uint32(2), uint64(0), uint32(100)), 200)
	h.dev.Notify(0)
	select {
	case <-g.reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the Tread did not reach the file")
	}
	paused := make(chan error, 1)
	go func() { paused <- h.dev.Pause() }()
	h.connPaused()
	select {
	case err := <-paused:
		t.Fatalf("Pause returned (%v) with a Tread in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	wk, ww := h.post(msg(tTwalk, 6, uint32(1), uint32(3), uint16(1), "d"), 64)
	h.dev.Notify(0)
	g.open()
	select {
	case err := <-paused:
		if err != nil {
			t.Fatalf("Pause: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Pause did not return after the Tread was answered")
	}
	if st := h.q.State(); st.NextAvail != st.NextUsed || st.NextUsed != 5 {
		t.Fatalf("after Pause: next avail %d, next used %d; want 5 and 5", st.NextAvail, st.NextUsed)
	}
	id, n := h.wait()
	if id != uint32(rd) {
		t.Fatalf("chain %d completed; want the Tread's %d", id, rd)
	}
	typ, tag, body := reply(t, h.replyAt(rw, n))
	if typ != tRread || tag != 5 || string(body[4:]) != "bee" {
		t.Fatalf("Tread answered with type %d tag %d body %q", typ, tag, body)
	}
	if err := h.dev.Pause(); err != nil { // idempotent
		t.Fatalf("second Pause: %v", err)
	}
	h.dev.Notify(0)
	h.noneUsed(100*time.Millisecond, "while paused")

	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	id, n = h.wait()
	if id != uint32(wk) {
		t.Fatalf("chain %d completed; want the Twalk's %d", id, wk)
	}
	if typ, tag, _ := reply(t, h.replyAt(ww, n)); typ != tRwalk || tag != 6 {
		t.Fatalf("Twalk answered with type %d tag %d", typ, tag)
	}
	if err := h.dev.Resume(); err != nil { // a no-op now
		t.Fatal(err)
	}
	h.readBee() // the open fid survived the pause
}

// TestPauseTimesOut: a request that never ends makes Pause fail after
// Config.PauseWait, naming the share; the device takes nothing new until
// Resume, and goes on when the request ends.
func TestPauseTimesOut(t *testing.T) {
	h, g := gateHarness(t, Config{Tag: "slow", PauseWait: 100 * time.Millisecond})
	h.mountFile()
	h.drv.ResetHeap()
	rd, _ := h.post(msg(tTread, 5, uint32(2), uint64(0), uint32(100)), 200)
	h.dev.Notify(0)
	select {
	case <-g.reading:
	case <-time.After(10 * time.Second):
		t.Fatal("the Tread did not reach the file")
	}
	err := h.dev.Pause()
	if err == nil || !strings.Contains(err.Error(), `"slow"`) || !strings.Contains(err.Error(), "1 requests still in flight") {
		t.Fatalf("Pause with a read stuck = %v", err)
	}
	wk, _ := h.post(msg(tTwalk, 6, uint32(1), uint32(3), uint16(1), "d"), 64)
	h.dev.Notify(0)
	g.open()
	if id, _ := h.wait(); id != uint32(rd) {
		t.Fatalf("chain %d completed; want the Tread's %d", id, rd)
	}
	h.noneUsed(50*time.Millisecond, "after a failed Pause")
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	if id, _ := h.wait(); id != uint32(wk) {
		t.Fatalf("chain %d completed; want the Twalk's %d", id, wk)
	}
}

// TestPauseInactiveResetClose: Pause of an unactivated device is a no-op;
// a paused device can be reset (and activated and served again) and
// closed without a Resume.
func TestPauseInactiveResetClose(t *testing.T) {
	fs, err := hostfs.New(t.TempDir(), hostfs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Tag: "idle", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Pause(); err != nil {
		t.Fatalf("Pause of an inactive device: %v", err)
	}
	if err := d.Resume(); err != nil {
		t.Fatalf("Resume of an inactive device: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}

	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
	h.mountFile()
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	h.drv.ResetHeap()
	h.post(msg(tTversion, noTag, uint32(8192), "9P2000.L"), 64)
	h.dev.Notify(0)
	done := make(chan error, 1)
	go func() { done <- h.dev.Reset() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Reset while paused: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Reset while paused hung")
	}
	if h.fs.Files() != 0 {
		t.Fatalf("%d files open after Reset", h.fs.Files())
	}
	h.activate()
	h.mountFile()
	h.readBee()
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- h.dev.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close while paused: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close while paused hung")
	}
}

// TestPauseFailedDevice: a reply too large for its chain fails the device
// and is dropped; its slot must not keep Pause waiting.
func TestPauseFailedDevice(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{PauseWait: 2 * time.Second})
	h.expectFail(chain{msg: msg(tTversion, 1, uint32(8192), "9P2000.L"), wlen: 11})
	if err := h.dev.Pause(); err != nil {
		t.Fatalf("Pause of a failed device: %v", err)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
}
