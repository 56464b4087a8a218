package blk

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// postWrite makes a write of data at sector available on queue q without
// kicking, with buffers of its own (the heap is not reset), and returns
// the status byte's address.
func (h *harness) postWrite(q int, sector uint64, data []byte) uint64 {
	h.t.Helper()
	d := h.drivers[q]
	hdr := d.Alloc(hdrSize, 16)
	var hb [hdrSize]byte
	binary.LittleEndian.PutUint32(hb[hdrType:], TypeOut)
	binary.LittleEndian.PutUint64(hb[hdrSector:], sector)
	buf := d.Alloc(uint64(len(data)), 512)
	status := d.Alloc(1, 1)
	for _, w := range []struct {
		b   []byte
		gpa uint64
	}{{hb[:], hdr}, {data, buf}, {[]byte{0xee}, status}} {
		if err := h.mem.WriteAt(w.b, w.gpa); err != nil {
			h.t.Fatal(err)
		}
	}
	if _, ok := d.Add(testdriver.Seg{Addr: hdr, Len: hdrSize}, testdriver.Seg{Addr: buf, Len: uint32(len(data))},
		testdriver.Seg{Addr: status, Len: 1, Write: true}); !ok {
		h.t.Fatal("queue full")
	}
	return status
}

// inFlight returns, per running queue, the chains taken and not returned.
func (h *harness) inFlight() []uint16 {
	var n []uint16
	if r := h.dev.active.Load(); r != nil {
		for _, w := range r.workers {
			if w != nil {
				n = append(n, w.q.InFlight())
			}
		}
	}
	return n
}

func TestPauseDrainsAndHolds(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize), NumQueues: 2}, 0)
	const per = 24
	data := func(q, i int) []byte { return pattern(8192, byte(q*per+i+1)) }
	for q := range 2 {
		for i := range per {
			h.postWrite(q, uint64((q*per+i)*16), data(q, i))
		}
		h.dev.Notify(q)
	}
	// Pause while the workers are (most likely) in the middle of the batch.
	if err := h.dev.Pause(); err != nil {
		t.Fatalf("Pause: %v", err)
	}
	if err := h.dev.Pause(); err != nil {
		t.Fatalf("second Pause: %v", err)
	}
	for q, n := range h.inFlight() {
		if n != 0 {
			t.Fatalf("queue %d has %d chains in flight after Pause", q, n)
		}
	}
	used := []uint16{h.drivers[0].UsedIdx(), h.drivers[1].UsedIdx()}
	// Kicks during the pause, with more requests, are held.
	extra := pattern(4096, 0x77)
	h.postWrite(0, 1000, extra)
	h.dev.Notify(0)
	h.dev.Notify(1)
	time.Sleep(100 * time.Millisecond)
	for q := range 2 {
		if got := h.drivers[q].UsedIdx(); got != used[q] {
			t.Fatalf("queue %d used idx moved from %d to %d while paused", q, used[q], got)
		}
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatalf("second Resume: %v", err)
	}
	want := []uint16{per + 1, per}
	deadline := time.Now().Add(10 * time.Second)
	for q := range 2 {
		for h.drivers[q].UsedIdx() != want[q] {
			if time.Now().After(deadline) {
				t.Fatalf("queue %d: used idx %d after Resume; want %d", q, h.drivers[q].UsedIdx(), want[q])
			}
			time.Sleep(time.Millisecond)
		}
	}
	img, err := os.ReadFile(h.path)
	if err != nil {
		t.Fatal(err)
	}
	for q := range 2 {
		for i := range per {
			off := (q*per + i) * 16 * SectorSize
			if !bytes.Equal(img[off:off+8192], data(q, i)) {
				t.Fatalf("write %d of queue %d not on the image", i, q)
			}
		}
	}
	if !bytes.Equal(img[1000*SectorSize:1000*SectorSize+4096], extra) {
		t.Fatal("write made available during the pause not on the image")
	}
}

func TestPauseInactiveAndReset(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := h.dev.Pause(); err != nil { // inactive: a no-op
		t.Fatalf("Pause of an inactive device: %v", err)
	}
	if h.dev.common.Paused() {
		t.Fatal("inactive device reports paused")
	}
	h.activate()
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	// A guest reset while paused stops nothing twice and leaves it inactive.
	if err := h.dev.Reset(); err != nil {
		t.Fatalf("Reset while paused: %v", err)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatalf("Resume after reset: %v", err)
	}
	if h.dev.active.Load() != nil {
		t.Fatal("Resume after Reset started workers")
	}
	h.activate()
	if r := h.do(req{typ: TypeOut, sector: 0, out: pattern(512, 3)}); r.status != StatusOK {
		t.Fatalf("status %d after re-activation", r.status)
	}
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := h.dev.Close(); err != nil {
		t.Fatalf("Close while paused: %v", err)
	}
}
