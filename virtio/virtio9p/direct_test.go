package virtio9p

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// submitRead makes one chain available holding m, then wlen writable
// bytes: an 11-byte buffer for the reply's header first when hdrBuf (as
// Linux's zero-copy reads lay them out), the rest in segments of wsplit
// bytes. It returns the writable bytes' GPA.
func (h *harness) submitRead(m []byte, wlen int, hdrBuf bool, wsplit int) uint64 {
	h.t.Helper()
	d := h.drv
	d.ResetHeap()
	a := d.Alloc(uint64(len(m)), 8)
	if err := h.mem.WriteAt(m, a); err != nil {
		h.t.Fatal(err)
	}
	segs := []testdriver.Seg{{Addr: a, Len: uint32(len(m))}}
	w := d.Alloc(uint64(wlen), 4096)
	rest, at := uint64(wlen), w
	if hdrBuf && rest >= rlerrorLen {
		segs = append(segs, testdriver.Seg{Addr: at, Len: rlerrorLen, Write: true})
		rest -= rlerrorLen
		at += rlerrorLen
	}
	for rest > 0 {
		k := min(rest, uint64(wsplit))
		segs = append(segs, testdriver.Seg{Addr: at, Len: uint32(k), Write: true})
		rest -= k
		at += k
	}
	if _, ok := d.AddIndirect(segs...); !ok {
		h.t.Fatalf("no room for %d descriptors", len(segs))
	}
	return w
}

// TestDirectRead: Tread data goes from the file straight into the chain
// (hostfs stages it), with the count the file gave, bounded by the
// request, msize and the writable part; reads the server refuses get
// its Rlerror; no staged read is left behind.
func TestDirectRead(t *testing.T) {
	dir := shareDir(t)
	data := make([]byte, 300<<10)
	for i := range data {
		data[i] = byte(i*131 + i>>9)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, dir, hostfs.Options{}, Config{})
	h.version(DefaultMaxMessageSize)
	do := func(m []byte) []byte {
		t.Helper()
		return h.do(chain{msg: m, wlen: 64})
	}
	want := func(b []byte, typ byte) {
		t.Helper()
		if got, _, _ := reply(t, b); got != typ {
			t.Fatalf("reply type %d, want %d", got, typ)
		}
	}
	want(do(msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0))), tRattach)
	want(do(msg(tTwalk, 1, uint32(1), uint32(2), uint16(1), "big")), tRwalk)
	want(do(msg(tTlopen, 1, uint32(2), uint32(0))), tRlopen)

	end := uint64(len(data))
	for _, c := range []struct {
		name   string
		off    uint64
		count  uint32
		wlen   int
		hdrBuf bool
		wsplit int
		n      uint32 // bytes the reply carries
	}{
		{"zero-copy layout", 1000, 200000, rlerrorLen + 200000, true, 4096, 200000},
		{"one buffer", 5, 70000, rlerrorLen + 70000, false, 1 << 20, 70000},
		{"odd segments", 77, 30000, rlerrorLen + 30000, false, 333, 30000},
		{"short at the end", end - 100, 4096, rlerrorLen + 4096, true, 4096, 100},
		{"at the end", end, 4096, rlerrorLen + 4096, true, 4096, 0},
		{"past the end", end + 1, 4096, rlerrorLen + 4096, true, 4096, 0},
		{"count 0", 0, 0, 64, false, 64, 0},
		{"writable part smaller than count", 4096, 100000, rlerrorLen + 5000, true, 4096, 5000},
		{"writable part just the header", 0, 100, rlerrorLen, false, 64, 0},
		{"count over msize", 0, 0xffffffff, 2 << 20, false, 64 << 10, uint32(min(end, DefaultMaxMessageSize-rlerrorLen))},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := h.submitRead(msg(tTread, 0x4242, uint32(2), c.off, c.count), c.wlen, c.hdrBuf, c.wsplit)
			h.dev.Notify(0)
			_, used := h.wait()
			b, err := h.mem.Slice(w, uint64(used))
			if err != nil {
				t.Fatal(err)
			}
			typ, tag, body := reply(t, b)
			if typ != tRread || tag != 0x4242 {
				t.Fatalf("reply type %d tag %#x, want Rread %#x", typ, tag, 0x4242)
			}
			if n := binary.LittleEndian.Uint32(body); n != c.n || len(body) != 4+int(n) {
				t.Fatalf("Rread count %d with %d data bytes, want %d", n, len(body)-4, c.n)
			}
			from := min(c.off, end)
			if !bytes.Equal(body[4:], data[from:from+uint64(c.n)]) {
				t.Errorf("data differs from the file's at %d", c.off)
			}
		})
	}

	// Reads the server refuses, answered with its Rlerror.
	want(do(msg(tTwalk, 1, uint32(1), uint32(3), uint16(1), "d")), tRwalk)
	want(do(msg(tTlopen, 1, uint32(3), uint32(0))), tRlopen)
	want(do(msg(tTwalk, 1, uint32(1), uint32(4), uint16(2), "d", "b")), tRwalk)
	want(do(msg(tTwalk, 1, uint32(1), uint32(5), uint16(2), "d", "b")), tRwalk)
	want(do(msg(tTlopen, 1, uint32(5), uint32(1))), tRlopen) // write only
	for _, c := range []struct {
		name  string
		fid   uint32
		off   uint64
		errno uint32
	}{
		{"a directory", 3, 0, 21},            // EISDIR
		{"a file not opened", 4, 0, 22},      // EINVAL
		{"a file open for writing", 5, 0, 1}, // EPERM
		{"an unknown fid", 99, 0, 9},         // EBADF
		{"an offset past 2^63", 2, 1<<63 | 1, 22},
		{"offset -1", 2, 1<<64 - 1, 22},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := h.submitRead(msg(tTread, 7, c.fid, c.off, uint32(4096)), rlerrorLen+4096, true, 4096)
			h.dev.Notify(0)
			_, used := h.wait()
			b, _ := h.mem.Slice(w, uint64(used))
			if e := rlerrno(t, b, 7); e != c.errno {
				t.Errorf("errno %d, want %d", e, c.errno)
			}
		})
	}
	// The file still reads after the refusals.
	if typ, _, body := reply(t, h.do(chain{msg: msg(tTread, 1, uint32(2), uint64(3), uint32(10)), wlen: 64})); typ != tRread || !bytes.Equal(body[4:], data[3:13]) {
		t.Fatalf("read after refusals: type %d body %x", typ, body)
	}
	if n := h.fs.Staged(); n != 0 {
		t.Errorf("%d reads left staged", n)
	}
	// Every Rread above but the refused ones came the direct way.
	if n := h.dev.Counters(); n.GuestErrors != 0 || n.ProtocolErrors != 0 || n.DirectReads != 11 {
		t.Errorf("counters %+v, want 11 direct reads", n)
	}
}

// TestContextEndStopsTaking: once the activation's context ends the
// device takes no more chains (no worker goroutine watches it now: the
// server's reader does), and Reset still returns.
func TestContextEndStopsTaking(t *testing.T) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	feat := h.dev.Features()
	h.drv = testdriver.New(h.mem, h.dev.MaxQueueSize(), 0x1000, testMem, 0)
	h.drv.EventIdx = true
	q, err := queue.New(h.mem, h.drv.L, virtio.QueueOptions(feat, h.dev.MaxQueueSize()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := h.dev.Activate(ctx, virtio.Activation{Mem: h.mem, Features: feat, Queues: []*queue.Queue{q}, Interrupt: h.irq}); err != nil {
		t.Fatal(err)
	}
	h.version(8192)
	cancel()
	time.Sleep(20 * time.Millisecond) // the reader sees the end
	h.drv.ResetHeap()
	h.submit(chain{msg: msg(tTversion, noTag, uint32(8192), "9P2000.L"), wlen: 64})
	h.dev.Notify(0)
	time.Sleep(100 * time.Millisecond)
	if _, _, ok := h.drv.Used(); ok {
		t.Fatal("a chain was answered after the context ended")
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
}
