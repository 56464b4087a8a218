package blk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

func TestSegMaxEnforced(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	segMax := int(binary.LittleEndian.Uint32(h.dev.config[cfgSegMax:]))
	if segMax != DefaultQueueSize-2 {
		t.Fatalf("seg_max %d; want %d", segMax, DefaultQueueSize-2)
	}
	for _, typ := range []uint32{TypeIn, TypeOut} {
		for _, segs := range []int{segMax, segMax + 1} {
			r := req{typ: typ, sector: 8, segSize: SectorSize, indirect: true}
			if typ == TypeIn {
				r.in = segs * SectorSize
			} else {
				r.out = pattern(segs*SectorSize, 1)
			}
			want := byte(StatusOK)
			if segs > segMax {
				want = StatusIOErr
			}
			before := h.dev.Counters().GuestErrors
			if res := h.do(r); res.status != want {
				t.Errorf("type %d with %d data segments: status %d; want %d", typ, segs, res.status, want)
			}
			if got := h.dev.Counters().GuestErrors - before; got != uint64(want) {
				t.Errorf("type %d with %d data segments: %d guest errors counted", typ, segs, got)
			}
		}
	}
}

func TestSizeMaxEnforced(t *testing.T) {
	const img = 4 << 20
	path := tempImage(t, img)
	orig := fileBytes(t, path, 0, 2*sizeMax)
	h := newHarness(t, Config{Path: path}, 0)
	if got := binary.LittleEndian.Uint32(h.dev.config[cfgSizeMax:]); got != sizeMax {
		t.Fatalf("size_max %d; want %d", got, sizeMax)
	}
	// The largest segment passes, one sector more fails, in both directions.
	for _, n := range []int{sizeMax, sizeMax + SectorSize} {
		want := byte(StatusOK)
		if n > sizeMax {
			want = StatusIOErr
		}
		if r := h.do(req{typ: TypeIn, sector: 0, in: n, segSize: n}); r.status != want {
			t.Errorf("read of one %d-byte segment: status %d; want %d", n, r.status, want)
		} else if want == StatusOK && !bytes.Equal(r.in, orig[:n]) {
			t.Errorf("read of one %d-byte segment: wrong data", n)
		}
		data := pattern(n, 7)
		if r := h.do(req{typ: TypeOut, sector: 0, out: data, segSize: n}); r.status != want {
			t.Errorf("write of one %d-byte segment: status %d; want %d", n, r.status, want)
		}
		if want == StatusOK {
			if !bytes.Equal(fileBytes(t, path, 0, n), data) {
				t.Errorf("write of one %d-byte segment not on the file", n)
			}
		} else if !bytes.Equal(fileBytes(t, path, 0, n), orig[:n]) {
			// The refused write must change nothing (the passing one was undone below).
			t.Errorf("a refused %d-byte segment changed the file", n)
		}
		if want == StatusOK {
			if r := h.do(req{typ: TypeOut, sector: 0, out: orig[:n], segSize: n}); r.status != StatusOK {
				t.Fatal("restoring the image failed")
			}
		}
	}
	if c := h.dev.Counters(); c.GuestErrors != 2 {
		t.Errorf("%d guest errors; want 2", c.GuestErrors)
	}
}

// dataReq is a parsed IN or OUT for mergeRun.
func dataReq(typ uint32, off, n uint64, lo, hi int) request {
	return request{typ: typ, data: true, done: true, off: off, n: n, lo: lo, hi: hi}
}

func TestMergeRun(t *testing.T) {
	in, out := uint32(TypeIn), uint32(TypeOut)
	for _, c := range []struct {
		name  string
		reqs  []request
		start int
		end   int
		bytes uint64
	}{
		{"one", []request{dataReq(in, 0, 4096, 0, 1)}, 0, 1, 4096},
		{"adjacent reads", []request{dataReq(in, 0, 4096, 0, 1), dataReq(in, 4096, 8192, 1, 3), dataReq(in, 12288, 512, 3, 4)}, 0, 3, 12800},
		{"adjacent writes from the middle", []request{dataReq(out, 0, 512, 0, 1), dataReq(out, 4096, 512, 1, 2), dataReq(out, 4608, 512, 2, 3)}, 1, 3, 1024},
		{"gap", []request{dataReq(in, 0, 4096, 0, 1), dataReq(in, 8192, 4096, 1, 2)}, 0, 1, 4096},
		{"overlap", []request{dataReq(in, 0, 4096, 0, 1), dataReq(in, 512, 4096, 1, 2)}, 0, 1, 4096},
		{"backwards", []request{dataReq(in, 4096, 4096, 0, 1), dataReq(in, 0, 4096, 1, 2)}, 0, 1, 4096},
		{"read then write", []request{dataReq(in, 0, 4096, 0, 1), dataReq(out, 4096, 4096, 1, 2)}, 0, 1, 4096},
		{"write then read", []request{dataReq(out, 0, 4096, 0, 1), dataReq(in, 4096, 4096, 1, 2)}, 0, 1, 4096},
		{"flush between", []request{dataReq(out, 0, 4096, 0, 1), {typ: TypeFlush}, dataReq(out, 4096, 4096, 1, 2)}, 0, 1, 4096},
		{"refused between", []request{dataReq(in, 0, 4096, 0, 1), {typ: TypeIn, done: true, status: StatusIOErr}, dataReq(in, 4096, 4096, 1, 2)}, 0, 1, 4096},
		{"byte cap reached exactly", []request{dataReq(in, 0, mergeMax/2, 0, 1), dataReq(in, mergeMax/2, mergeMax/2, 1, 2), dataReq(in, mergeMax, 512, 2, 3)}, 0, 2, mergeMax},
		{"byte cap", []request{dataReq(in, 0, mergeMax-512, 0, 1), dataReq(in, mergeMax-512, 1024, 1, 2)}, 0, 1, mergeMax - 512},
		{"larger than the cap alone", []request{dataReq(in, 0, 2*mergeMax, 0, 1), dataReq(in, 2*mergeMax, 512, 1, 2)}, 0, 1, 2 * mergeMax},
		{"segment cap reached exactly", []request{dataReq(in, 0, 4096, 0, iovMax-1), dataReq(in, 4096, 512, iovMax-1, iovMax), dataReq(in, 4608, 512, iovMax, iovMax+1)}, 0, 2, 4608},
	} {
		t.Run(c.name, func(t *testing.T) {
			end, n := mergeRun(c.reqs, c.start)
			if end != c.end || n != c.bytes {
				t.Errorf("mergeRun from %d = %d, %d bytes; want %d, %d bytes", c.start, end, n, c.end, c.bytes)
			}
		})
	}
}

// syncRig serves requests on the calling goroutine: add lays requests out
// in guest memory without reusing earlier ones' buffers, serve drains them
// as one batch.
type syncRig struct {
	t    *testing.T
	dev  *Device
	mem  *guestmem.Memory
	d    *testdriver.Driver
	w    *worker
	reqs []rigReq
}

type rigReq struct {
	r      req
	status uint64
	in     uint64
}

func newSyncRig(t *testing.T, cfg Config) *syncRig {
	t.Helper()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	dev, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	feat := dev.Features()
	d := testdriver.New(mem, dev.MaxQueueSize(), 0x1000, testMem, 0)
	d.EventIdx = true
	q, err := queue.New(mem, d.L, virtio.QueueOptions(feat, dev.MaxQueueSize()))
	if err != nil {
		t.Fatal(err)
	}
	w := newWorker(dev, 0, q, virtio.Activation{Mem: mem, Features: feat, Interrupt: &nopIRQ{}}, nil)
	return &syncRig{t: t, dev: dev, mem: mem, d: d, w: w}
}

// add makes r available. Its data buffers start skew bytes past a 4 KiB
// boundary.
func (s *syncRig) add(r req, skew uint64) {
	s.t.Helper()
	segs, status, in := layout(s.t, s.mem, s.d, r, 4096, skew)
	rr := rigReq{r: r, in: in, status: status}
	if _, ok := s.d.AddIndirect(segs...); !ok {
		s.t.Fatal("queue full")
	}
	s.reqs = append(s.reqs, rr)
}

// serve drains the queue and returns each request's result in add order.
func (s *syncRig) serve() []result {
	s.t.Helper()
	if err := s.w.drain(context.Background()); err != nil {
		s.t.Fatalf("drain: %v", err)
	}
	var res []result
	for _, rr := range s.reqs {
		if _, _, ok := s.d.Used(); !ok {
			s.t.Fatal("a request was not completed")
		}
		b, _ := s.mem.Slice(rr.status, 1)
		r := result{status: b[0]}
		if rr.r.in > 0 {
			b, _ := s.mem.Slice(rr.in, uint64(rr.r.in))
			r.in = append([]byte(nil), b...)
		}
		res = append(res, r)
	}
	s.reqs = nil
	s.d.ResetHeap()
	return res
}

func TestMergedReadsAndWrites(t *testing.T) {
	path := tempImage(t, imgSize)
	orig := fileBytes(t, path, 0, imgSize)
	s := newSyncRig(t, Config{Path: path})
	// Four adjacent writes of different sizes and a non-adjacent one.
	var want []byte
	sector := uint64(16)
	for i, n := range []int{4096, 512, 8192, 1024} {
		d := pattern(n, byte(i+1))
		want = append(want, d...)
		s.add(req{typ: TypeOut, sector: sector, out: d, segSize: 1024}, 0)
		sector += uint64(n / SectorSize)
	}
	far := pattern(512, 99)
	s.add(req{typ: TypeOut, sector: 1000, out: far}, 0)
	for i, r := range s.serve() {
		if r.status != StatusOK {
			t.Fatalf("write %d: status %d", i, r.status)
		}
	}
	if !bytes.Equal(fileBytes(t, path, 16*SectorSize, len(want)), want) || !bytes.Equal(fileBytes(t, path, 1000*SectorSize, 512), far) {
		t.Fatal("the merged writes are not on the file")
	}
	if !bytes.Equal(fileBytes(t, path, 0, 16*SectorSize), orig[:16*SectorSize]) {
		t.Fatal("the sectors before the writes changed")
	}
	// The same ranges read back, adjacent reads merged.
	sector = 16
	for _, n := range []int{4096, 512, 8192, 1024} {
		s.add(req{typ: TypeIn, sector: sector, in: n, segSize: 1536}, 0)
		sector += uint64(n / SectorSize)
	}
	var got []byte
	for i, r := range s.serve() {
		if r.status != StatusOK {
			t.Fatalf("read %d: status %d", i, r.status)
		}
		got = append(got, r.in...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("merged reads returned the wrong data")
	}
	if c := s.dev.Counters(); c.In != 4 || c.Out != 5 || c.ReadBytes != uint64(len(want)) || c.WriteBytes != uint64(len(want)+512) {
		t.Fatalf("counters %+v", c)
	}
}

func TestMergedReadShortAtEnd(t *testing.T) {
	path := tempImage(t, imgSize)
	orig := fileBytes(t, path, 0, imgSize)
	s := newSyncRig(t, Config{Path: path})
	// The file shrinks under the device: its capacity stays, the last
	// 4 KiB are gone.
	if err := os.Truncate(path, imgSize-4096); err != nil {
		t.Fatal(err)
	}
	last := uint64(imgSize/SectorSize - 8)
	s.add(req{typ: TypeIn, sector: last - 8, in: 4096}, 0)
	s.add(req{typ: TypeIn, sector: last, in: 4096}, 0)
	res := s.serve()
	if res[0].status != StatusOK || !bytes.Equal(res[0].in, orig[imgSize-8192:imgSize-4096]) {
		t.Errorf("the read before the end: status %d (the merged read's failure leaked into it?)", res[0].status)
	}
	if res[1].status != StatusIOErr {
		t.Errorf("the read past the end of the file: status %d; want IOERR", res[1].status)
	}
	if c := s.dev.Counters(); c.IOErrors != 1 || c.GuestErrors != 0 || c.ReadBytes != 4096 {
		t.Errorf("counters %+v; want 1 I/O error and 4096 bytes read", c)
	}
}

func TestMergeReadOnlyRefusesEachWrite(t *testing.T) {
	path := tempImage(t, imgSize)
	orig := fileBytes(t, path, 0, imgSize)
	s := newSyncRig(t, Config{Path: path, ReadOnly: true})
	s.add(req{typ: TypeIn, sector: 0, in: 4096}, 0)
	s.add(req{typ: TypeOut, sector: 8, out: pattern(4096, 3)}, 0)
	s.add(req{typ: TypeOut, sector: 16, out: pattern(4096, 4)}, 0)
	s.add(req{typ: TypeIn, sector: 8, in: 4096}, 0)
	s.add(req{typ: TypeIn, sector: 16, in: 4096}, 0)
	res := s.serve()
	for i, want := range []byte{StatusOK, StatusIOErr, StatusIOErr, StatusOK, StatusOK} {
		if res[i].status != want {
			t.Errorf("request %d: status %d; want %d", i, res[i].status, want)
		}
	}
	if !bytes.Equal(res[3].in, orig[8*SectorSize:16*SectorSize]) || !bytes.Equal(res[4].in, orig[16*SectorSize:24*SectorSize]) {
		t.Error("the reads after the refused writes returned the wrong data")
	}
	if c := s.dev.Counters(); c.GuestErrors != 2 {
		t.Errorf("%d guest errors; want 2", c.GuestErrors)
	}
}

// directImage makes an image on a file system that takes O_DIRECT: the
// test's temp dir, else the package directory's.
func directImage(t *testing.T, size int) string {
	t.Helper()
	for _, dir := range []string{t.TempDir(), ""} {
		if dir == "" {
			d, err := os.MkdirTemp(".", "direct-test-")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(d) })
			dir = d
		}
		p := filepath.Join(dir, "disk.img")
		if err := os.WriteFile(p, pattern(size, 11), 0o644); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err == nil {
			unix.Close(fd)
			return p
		}
	}
	t.Skip("no directory here on a file system that takes O_DIRECT")
	return ""
}

func TestDirect(t *testing.T) {
	path := directImage(t, imgSize)
	s := newSyncRig(t, Config{Path: path, Direct: true})
	img := s.dev.img
	fl, err := unix.FcntlInt(uintptr(img.fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_DIRECT == 0 || img.fd == img.bfd {
		t.Fatalf("image not opened with O_DIRECT: flags %#x (%v)", fl, err)
	}
	if img.align != SectorSize && img.align != 4096 {
		t.Fatalf("alignment %d", img.align)
	}
	// O_DIRECT is really on: an unaligned buffer is refused by the kernel.
	odd := alignedBuffer(2*4096, 4096)[1 : 1+4096]
	if _, err := unix.Pread(img.fd, odd, 0); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("O_DIRECT read into an unaligned buffer: %v; want EINVAL", err)
	}
	// Make the device align to 4096 whatever the file system takes, so
	// every path below is taken.
	img.align = 4096
	for _, c := range []struct {
		name   string
		sector uint64
		n      int
		seg    int
		skew   uint64
		bounce bool
	}{
		{"aligned", 8, 8192, 4096, 0, false},
		{"unaligned buffers", 24, 8192, 4096, 512, true},
		{"unaligned segment lengths", 40, 8192, 1536, 0, true},
		{"larger than the bounce buffer", 64, bounceSize + 8192, 3072, 512, true},
		{"partial block", 1, 1024, 512, 512, false},
		{"partial block aligned buffer", 9, 4096, 4096, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s.w.bounce = nil
			data := pattern(c.n, byte(c.sector))
			s.add(req{typ: TypeOut, sector: c.sector, out: data, segSize: c.seg}, c.skew)
			if r := s.serve(); r[0].status != StatusOK {
				t.Fatalf("write: status %d", r[0].status)
			}
			if !bytes.Equal(fileBytes(t, path, int(c.sector)*SectorSize, c.n), data) {
				t.Fatal("the write is not on the file")
			}
			if (s.w.bounce != nil) != c.bounce {
				t.Errorf("bounce buffer used: %v; want %v", s.w.bounce != nil, c.bounce)
			}
			s.add(req{typ: TypeIn, sector: c.sector, in: c.n, segSize: c.seg}, c.skew)
			if r := s.serve(); r[0].status != StatusOK || !bytes.Equal(r[0].in, data) {
				t.Fatalf("read back: status %d, equal %v", r[0].status, bytes.Equal(r[0].in, data))
			}
		})
	}
	if c := s.dev.Counters(); c.IOErrors != 0 || c.GuestErrors != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// A file system that refuses O_DIRECT fails Open with a message that names
// the image and the option. ramfs refuses it (tmpfs did before Linux 6.6).
func TestDirectRefused(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("ramfs", dir, "ramfs", 0, ""); err != nil {
		t.Skipf("mount ramfs: %v (needs root)", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	p := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(p, pattern(8192, 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0); err == nil {
		unix.Close(fd)
		t.Skip("ramfs takes O_DIRECT on this kernel")
	}
	_, err := Open(Config{Path: p, Direct: true})
	if err == nil || !errors.Is(err, unix.EINVAL) || !bytes.Contains([]byte(err.Error()), []byte(p)) || !bytes.Contains([]byte(err.Error()), []byte("direct")) {
		t.Fatalf("Open with Direct on ramfs: %v; want an error naming %q and the direct option", err, p)
	}
	// Without Direct the same image opens, and the failed open left no lock.
	d, err := Open(Config{Path: p})
	if err != nil {
		t.Fatalf("Open without Direct: %v", err)
	}
	d.Close()
}

// A chain that cannot be answered fails the queue; the requests taken in
// the same batch before it are still answered, and nothing after it.
func TestBatchWithMalformedChain(t *testing.T) {
	path := tempImage(t, imgSize)
	s := newSyncRig(t, Config{Path: path})
	s.add(req{typ: TypeOut, sector: 0, out: pattern(4096, 5)}, 0)
	s.add(req{typ: TypeOut, sector: 8, out: pattern(4096, 6)}, 0)
	hdr := s.d.Alloc(8, 8) // a header of 8 bytes
	st := s.d.Alloc(1, 1)
	if _, ok := s.d.Add(testdriver.Seg{Addr: hdr, Len: 8}, testdriver.Seg{Addr: st, Len: 1, Write: true}); !ok {
		t.Fatal("queue full")
	}
	s.add(req{typ: TypeOut, sector: 16, out: pattern(4096, 7)}, 0)
	err := s.w.drain(context.Background())
	if !errors.Is(err, queue.ErrGuest) {
		t.Fatalf("drain: %v; want a guest error", err)
	}
	for i := range 2 {
		if _, _, ok := s.d.Used(); !ok {
			t.Fatalf("request %d before the malformed one not completed", i)
		}
		if b, _ := s.mem.Slice(s.reqs[i].status, 1); b[0] != StatusOK {
			t.Fatalf("request %d: status %d", i, b[0])
		}
	}
	if _, _, ok := s.d.Used(); ok {
		t.Fatal("the malformed request or the one after it was completed")
	}
	if !bytes.Equal(fileBytes(t, path, 0, 8192), append(pattern(4096, 5), pattern(4096, 6)...)) {
		t.Fatal("the writes before the malformed request are not on the file")
	}
	if c := s.dev.Counters(); c.Out != 2 {
		t.Fatalf("%d writes counted; want 2", c.Out)
	}
}
