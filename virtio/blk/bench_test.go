package blk

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

type nopIRQ struct{ n int }

func (i *nopIRQ) Signal(int) error { i.n++; return nil }

// pathRig drives one queue's worker synchronously: the mock driver makes
// requests available, drain serves them on the calling goroutine, the
// driver takes the completions. Everything but the guest is the real code.
type pathRig struct {
	d    *testdriver.Driver
	w    *worker
	mem  *guestmem.Memory
	dev  *Device
	hdrs []uint64 // one request header per slot
	data []uint64
	stat []uint64
	segs []testdriver.Seg
	ctx  context.Context
	mark uint64 // heap above the fixed buffers: indirect tables
	// spread is how many request sizes apart consecutive requests start:
	// 1 (the default) makes them adjacent, 2 leaves a gap after each.
	spread uint64
}

// rigSeg is the data segment size of a request of n bytes: 4 KiB pages,
// but no more than 128 of them, inside the seg_max of 254 the device
// advertises (a Linux guest merges contiguous pages into one segment).
func rigSeg(n int) int { return max(4096, n/128) }

const rigFile = 64 << 20

func newPathRig(tb testing.TB, reqBytes, batch int) *pathRig {
	tb.Helper()
	return newPathRigConfig(tb, reqBytes, batch, Config{})
}

// newPathRigConfig is newPathRig with the image opened with cfg (Path
// filled in).
func newPathRigConfig(tb testing.TB, reqBytes, batch int, cfg Config) *pathRig {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "bench.img")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	chunk := pattern(1<<20, 5)
	for off := 0; off < rigFile; off += len(chunk) {
		if _, err := f.Write(chunk); err != nil {
			tb.Fatal(err)
		}
	}
	f.Close()
	cfg.Path = path
	dev, err := Open(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { dev.Close() })
	memSize := uint64(1<<20 + batch*(reqBytes+8192) + 1<<20)
	memSize = (memSize + 4095) &^ 4095
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: memSize})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { mem.Close() })
	feat := dev.Features()
	d := testdriver.New(mem, dev.MaxQueueSize(), 0x1000, memSize, 0)
	d.EventIdx = true
	q, err := queue.New(mem, d.L, virtio.QueueOptions(feat, dev.MaxQueueSize()))
	if err != nil {
		tb.Fatal(err)
	}
	r := &pathRig{d: d, mem: mem, dev: dev, ctx: context.Background(), spread: 1}
	r.w = newWorker(dev, 0, q, virtio.Activation{Mem: mem, Features: feat, Interrupt: &nopIRQ{}}, nil)
	for range batch {
		r.hdrs = append(r.hdrs, d.Alloc(hdrSize, 16))
		r.data = append(r.data, d.Alloc(uint64(reqBytes), 4096))
		r.stat = append(r.stat, d.Alloc(1, 1))
	}
	r.mark = d.HeapMark()
	return r
}

// round makes n requests of typ available (sector advancing by the request
// size through the file), serves them, and takes the completions.
func (r *pathRig) round(tb testing.TB, typ uint32, reqBytes, n int, first uint64) {
	le := binary.LittleEndian
	sectors := uint64(reqBytes / SectorSize)
	total := uint64(rigFile / SectorSize)
	r.d.ReleaseTo(r.mark)
	for i := range n {
		hb, _ := r.mem.Slice(r.hdrs[i], hdrSize)
		le.PutUint32(hb[hdrType:], typ)
		le.PutUint64(hb[hdrSector:], (first+uint64(i))*sectors*r.spread%total)
		r.segs = append(r.segs[:0], testdriver.Seg{Addr: r.hdrs[i], Len: hdrSize})
		seg := rigSeg(reqBytes)
		for off := 0; off < reqBytes; off += seg {
			r.segs = append(r.segs, testdriver.Seg{Addr: r.data[i] + uint64(off), Len: uint32(min(seg, reqBytes-off)), Write: typ == TypeIn})
		}
		r.segs = append(r.segs, testdriver.Seg{Addr: r.stat[i], Len: 1, Write: true})
		var ok bool
		if len(r.segs) > 3 {
			_, ok = r.d.AddIndirect(r.segs...)
		} else {
			_, ok = r.d.Add(r.segs...)
		}
		if !ok {
			tb.Fatal("queue full")
		}
	}
	if err := r.w.drain(r.ctx); err != nil {
		tb.Fatal(err)
	}
	for range n {
		if _, _, ok := r.d.Used(); !ok {
			tb.Fatal("request not completed")
		}
	}
	for i := range n {
		if b, _ := r.mem.Slice(r.stat[i], 1); b[0] != StatusOK {
			tb.Fatalf("request %d: status %d", i, b[0])
		}
	}
}

func benchPath(b *testing.B, typ uint32, reqBytes, batch int, spread uint64) {
	r := newPathRig(b, reqBytes, batch)
	r.spread = spread
	r.round(b, typ, reqBytes, batch, 0) // grow the worker's and chain's arrays once
	b.SetBytes(int64(reqBytes))
	b.ReportAllocs()
	b.ResetTimer()
	done := 0
	for done < b.N {
		n := min(batch, b.N-done)
		r.round(b, typ, reqBytes, n, uint64(done))
		done += n
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkDataPath measures the virtio-blk request path through the real
// queue code on one queue: guest memory is fake, the image a 64 MiB temp
// file in the page cache, requests served in batches of 32 as a guest with
// queue depth 32 would keep them coming. 4 KiB requests use three direct
// descriptors; 1 MiB requests an indirect table of 130 (8 KiB segments).
// Requests are to adjacent sectors (merged), except in the -gaps cases,
// where each starts one request size after the previous one ended.
func BenchmarkDataPath(b *testing.B) {
	for _, c := range []struct {
		name   string
		typ    uint32
		bytes  int
		spread uint64
	}{
		{"read-4KiB", TypeIn, 4096, 1},
		{"write-4KiB", TypeOut, 4096, 1},
		{"read-4KiB-gaps", TypeIn, 4096, 2},
		{"write-4KiB-gaps", TypeOut, 4096, 2},
		{"read-1MiB", TypeIn, 1 << 20, 1},
		{"write-1MiB", TypeOut, 1 << 20, 1},
	} {
		b.Run(c.name, func(b *testing.B) { benchPath(b, c.typ, c.bytes, 32, c.spread) })
	}
}

// The request path allocates nothing per request once warm.
func TestDataPathDoesNotAllocate(t *testing.T) {
	for _, c := range []struct {
		typ   uint32
		bytes int
	}{{TypeIn, 4096}, {TypeOut, 4096}, {TypeIn, 1 << 20}, {TypeFlush, 0}} {
		r := newPathRig(t, max(c.bytes, 512), 4)
		run := func() { r.round(t, c.typ, c.bytes, 4, 0) }
		run()
		if n := testing.AllocsPerRun(20, run); n != 0 {
			t.Errorf("type %d, %d bytes: %v allocations per batch of 4", c.typ, c.bytes, n)
		}
	}
	// O_DIRECT through the bounce buffer: 8 KiB requests of 4 KiB pages
	// with the device aligning to 8 KiB.
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if fd, err := unix.Open(probe, unix.O_RDONLY|unix.O_DIRECT, 0); err != nil {
		t.Skipf("the temp dir's file system refuses O_DIRECT: %v", err)
	} else {
		unix.Close(fd)
	}
	for _, typ := range []uint32{TypeIn, TypeOut} {
		r := newPathRigConfig(t, 8192, 4, Config{Direct: true})
		r.dev.img.align = 8192
		run := func() { r.round(t, typ, 8192, 4, 0) }
		run()
		if r.w.bounce == nil {
			t.Fatal("the bounce buffer was not used")
		}
		if n := testing.AllocsPerRun(20, run); n != 0 {
			t.Errorf("O_DIRECT type %d through the bounce buffer: %v allocations per batch of 4", typ, n)
		}
	}
}
