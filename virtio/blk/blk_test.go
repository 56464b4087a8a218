package blk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

const imgSize = 1 << 20 // 2048 sectors

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*13) + byte(i>>9)
	}
	return b
}

func fileBytes(t *testing.T, path string, off, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[off : off+n]
}

func TestReadWriteRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name     string
		drop     uint64
		indirect bool
		segSize  int
	}{
		{"direct", virtio.FIndirectDesc | virtio.FEventIdx, false, 4096},
		{"indirect+eventidx", 0, true, 512},
		{"one segment", 0, false, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{Path: tempImage(t, imgSize)}, tc.drop)
			data := pattern(12288, 3)
			if r := h.do(req{typ: TypeOut, sector: 100, out: data, indirect: tc.indirect, segSize: tc.segSize}); r.status != StatusOK {
				t.Fatalf("write status %d", r.status)
			}
			if got := fileBytes(t, h.path, 100*SectorSize, len(data)); !bytes.Equal(got, data) {
				t.Fatal("host file does not hold the written data")
			}
			r := h.do(req{typ: TypeIn, sector: 100, in: len(data), indirect: tc.indirect, segSize: tc.segSize})
			if r.status != StatusOK || !bytes.Equal(r.in, data) {
				t.Fatalf("read back: status %d, equal %v", r.status, bytes.Equal(r.in, data))
			}
			if r.usedLen != uint32(len(data)+1) {
				t.Fatalf("used len %d; want %d", r.usedLen, len(data)+1)
			}
			// Untouched sectors read as the original pattern.
			r = h.do(req{typ: TypeIn, sector: 0, in: 1024})
			if !bytes.Equal(r.in, fileBytes(t, h.path, 0, 1024)) {
				t.Fatal("read of sector 0 differs from the file")
			}
			// The last sector.
			if r := h.do(req{typ: TypeIn, sector: imgSize/SectorSize - 1, in: 512}); r.status != StatusOK {
				t.Fatalf("read of the last sector: status %d", r.status)
			}
		})
	}
}

func TestFlushAndWriteThrough(t *testing.T) {
	// With FLUSH negotiated, FLUSH is fdatasync.
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	if r := h.do(req{typ: TypeFlush}); r.status != StatusOK {
		t.Fatalf("flush status %d", r.status)
	}
	// Without it, writes still complete (write-through).
	h2 := newHarness(t, Config{Path: tempImage(t, imgSize)}, FFlush)
	if r := h2.do(req{typ: TypeOut, sector: 1, out: pattern(512, 1)}); r.status != StatusOK {
		t.Fatalf("write-through write status %d", r.status)
	}
}

func TestGetID(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize), Serial: "corral-disk-7"}, 0)
	r := h.do(req{typ: TypeGetID, in: IDBytes})
	want := make([]byte, IDBytes)
	copy(want, "corral-disk-7")
	if r.status != StatusOK || !bytes.Equal(r.in, want) {
		t.Fatalf("GET_ID = %d %q", r.status, r.in)
	}
	r = h.do(req{typ: TypeGetID, in: 6})
	if r.status != StatusOK || string(r.in) != "corral" {
		t.Fatalf("GET_ID into 6 bytes = %d %q", r.status, r.in)
	}
	if _, err := Open(Config{Path: tempImage(t, imgSize), Serial: "123456789012345678901"}); err == nil {
		t.Fatal("a 21-byte serial was accepted")
	}
}

func TestOutOfRange(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	capacity := uint64(imgSize / SectorSize)
	cases := []req{
		{typ: TypeIn, sector: capacity, in: 512},
		{typ: TypeIn, sector: capacity - 1, in: 1024},
		{typ: TypeIn, sector: 1 << 63, in: 512},
		{typ: TypeIn, sector: ^uint64(0), in: 512},
		{typ: TypeIn, sector: ^uint64(0) / SectorSize, in: 512}, // sector*512 overflows
		{typ: TypeOut, sector: capacity, out: pattern(512, 0)},
		{typ: TypeOut, sector: capacity - 1, out: pattern(1024, 0)},
		{typ: TypeIn, sector: 0, in: 100},                        // not a multiple of 512
		{typ: TypeOut, sector: 0, out: pattern(700, 0)},          // not a multiple of 512
		{typ: TypeIn, sector: 0, in: 512, out: pattern(512, 0)},  // data in both directions
		{typ: TypeOut, sector: 0, in: 512, out: pattern(512, 0)}, // data in both directions
	}
	for i, r := range cases {
		if res := h.do(r); res.status != StatusIOErr {
			t.Errorf("case %d (%+v): status %d; want IOERR", i, r, res.status)
		}
	}
	if got := fileBytes(t, h.path, imgSize-1024, 1024); !bytes.Equal(got, fileBytes(t, tempImage(t, imgSize), imgSize-1024, 1024)) {
		t.Fatal("an out-of-range write changed the image")
	}
	if st, _ := os.Stat(h.path); st.Size() != imgSize {
		t.Fatalf("image size changed to %d", st.Size())
	}
}

func TestUnsupportedType(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	for _, typ := range []uint32{2, 10, 14, 99, 0xffffffff} {
		if r := h.do(req{typ: typ, in: 512}); r.status != StatusUnsupp {
			t.Errorf("type %d: status %d; want UNSUPP", typ, r.status)
		}
	}
}

func TestMalformedRequestsFailDevice(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    req
	}{
		{"no status byte", req{typ: TypeIn, noStatus: true}},
		{"short header", req{typ: TypeIn, hdrLen: 8, in: 512}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
			err := h.expectFail(tc.r)
			if queue.KindOf(err) != queue.BadRequest || !errors.Is(err, queue.ErrGuest) {
				t.Fatalf("failure %v; want a BadRequest guest error", err)
			}
		})
	}
}

// A readable status "byte" (the guest made the last buffer device-readable)
// leaves no writable byte: the device fails rather than write into it.
func TestReadOnlyDescriptorForStatus(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	d := h.drivers[0]
	hdr := d.Alloc(16, 16)
	st := d.Alloc(1, 1)
	d.Add(testSeg(hdr, 16, false), testSeg(st, 1, false))
	h.dev.Notify(0)
	<-h.failed
	if b, _ := h.mem.Slice(st, 1); b[0] != 0 {
		t.Fatal("the device wrote into a device-readable buffer")
	}
}

func TestReadOnlyDisk(t *testing.T) {
	path := tempImage(t, imgSize)
	orig := fileBytes(t, path, 0, imgSize)
	h := newHarness(t, Config{Path: path, ReadOnly: true}, 0)
	if h.dev.Features()&FRO == 0 {
		t.Fatal("VIRTIO_BLK_F_RO not offered")
	}
	if h.dev.Features()&(FDiscard|FWriteZeroes) != 0 {
		t.Fatal("discard/write zeroes offered on a read-only disk")
	}
	fl, err := unix.FcntlInt(uintptr(h.dev.img.fd), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_ACCMODE != unix.O_RDONLY {
		t.Fatalf("read-only image opened with flags %#x (%v)", fl, err)
	}
	if r := h.do(req{typ: TypeOut, sector: 0, out: pattern(512, 9)}); r.status != StatusIOErr {
		t.Fatalf("write to a read-only disk: status %d; want IOERR", r.status)
	}
	if r := h.do(req{typ: TypeIn, sector: 0, in: 512}); r.status != StatusOK || !bytes.Equal(r.in, orig[:512]) {
		t.Fatalf("read from a read-only disk: status %d", r.status)
	}
	if r := h.do(req{typ: TypeFlush}); r.status != StatusOK {
		t.Fatalf("flush of a read-only disk: status %d", r.status)
	}
	if r := h.do(req{typ: TypeDiscard, out: dwzSeg(0, 8, 0)}); r.status != StatusUnsupp {
		t.Fatalf("discard on a read-only disk: status %d; want UNSUPP", r.status)
	}
	if !bytes.Equal(fileBytes(t, path, 0, imgSize), orig) {
		t.Fatal("read-only image changed")
	}
}

func dwzSeg(sector uint64, num, flags uint32) []byte {
	b := make([]byte, dwzSize)
	binary.LittleEndian.PutUint64(b[dwzSector:], sector)
	binary.LittleEndian.PutUint32(b[dwzNumSectors:], num)
	binary.LittleEndian.PutUint32(b[dwzFlags:], flags)
	return b
}

func TestDiscardWriteZeroes(t *testing.T) {
	path := tempImage(t, imgSize)
	h := newHarness(t, Config{Path: path}, 0)
	if h.dev.Features()&FDiscard == 0 || h.dev.Features()&FWriteZeroes == 0 {
		t.Skipf("the file system under %s lacks fallocate PUNCH_HOLE/ZERO_RANGE (features %#x)", filepath.Dir(path), h.dev.Features())
	}
	orig := fileBytes(t, path, 0, imgSize)
	zero := make([]byte, 8*SectorSize)
	check := func(what string, sector int, wantZero bool) {
		t.Helper()
		got := fileBytes(t, path, sector*SectorSize, len(zero))
		if wantZero && !bytes.Equal(got, zero) {
			t.Errorf("%s: sectors %d.. not zero", what, sector)
		}
		if !wantZero && !bytes.Equal(got, orig[sector*SectorSize:][:len(zero)]) {
			t.Errorf("%s: sectors %d.. changed", what, sector)
		}
	}
	if r := h.do(req{typ: TypeDiscard, out: dwzSeg(16, 8, 0)}); r.status != StatusOK {
		t.Fatalf("discard status %d", r.status)
	}
	check("discard", 16, true)
	check("discard", 24, false)
	two := append(dwzSeg(64, 8, 0), dwzSeg(128, 8, dwzFlagUnmap)...)
	if r := h.do(req{typ: TypeWriteZeroes, out: two}); r.status != StatusOK {
		t.Fatalf("write zeroes status %d", r.status)
	}
	check("write zeroes", 64, true)
	check("write zeroes with unmap", 128, true)
	check("write zeroes", 72, false)

	bad := []struct {
		name string
		r    req
		want byte
	}{
		{"discard with unmap", req{typ: TypeDiscard, out: dwzSeg(256, 8, dwzFlagUnmap)}, StatusUnsupp},
		{"unknown flag", req{typ: TypeWriteZeroes, out: dwzSeg(256, 8, 2)}, StatusUnsupp},
		{"past the end", req{typ: TypeDiscard, out: dwzSeg(imgSize/SectorSize-4, 8, 0)}, StatusIOErr},
		{"sector overflow", req{typ: TypeWriteZeroes, out: dwzSeg(^uint64(0)-2, 8, 0)}, StatusIOErr},
		{"too many sectors", req{typ: TypeDiscard, out: dwzSeg(0, maxDiscardSectors+1, 0)}, StatusIOErr},
		{"partial segment", req{typ: TypeDiscard, out: dwzSeg(256, 8, 0)[:12]}, StatusIOErr},
		{"no segment", req{typ: TypeDiscard}, StatusIOErr},
		{"too many segments", req{typ: TypeDiscard, out: bytes.Repeat(dwzSeg(256, 1, 0), maxDiscardSeg+1)}, StatusIOErr},
		// A good segment then a bad one: nothing may change.
		{"good then bad", req{typ: TypeDiscard, out: append(dwzSeg(256, 8, 0), dwzSeg(imgSize, 1, 0)...)}, StatusIOErr},
	}
	for _, b := range bad {
		if r := h.do(b.r); r.status != b.want {
			t.Errorf("%s: status %d; want %d", b.name, r.status, b.want)
		}
	}
	check("after refused requests", 256, false)
	if st, _ := os.Stat(path); st.Size() != imgSize {
		t.Fatalf("image size changed to %d", st.Size())
	}
}

// When the driver did not accept DISCARD, the request type is unsupported.
func TestDiscardNotNegotiated(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, FDiscard|FWriteZeroes)
	if r := h.do(req{typ: TypeDiscard, out: dwzSeg(0, 8, 0)}); r.status != StatusUnsupp {
		t.Fatalf("status %d; want UNSUPP", r.status)
	}
}

func TestImageLocking(t *testing.T) {
	path := tempImage(t, imgSize)
	a, err := Open(Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Config{Path: path}); !errors.Is(err, ErrImageLocked) {
		t.Fatalf("second read-write open: %v; want ErrImageLocked", err)
	}
	if _, err := Open(Config{Path: path, ReadOnly: true}); !errors.Is(err, ErrImageLocked) {
		t.Fatalf("read-only open of a written image: %v; want ErrImageLocked", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	r1, err := Open(Config{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open after close: %v", err)
	}
	defer r1.Close()
	r2, err := Open(Config{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatalf("two read-only opens: %v", err)
	}
	defer r2.Close()
	if _, err := Open(Config{Path: path}); !errors.Is(err, ErrImageLocked) {
		t.Fatalf("read-write open of a shared image: %v; want ErrImageLocked", err)
	}
}

func TestOpenErrors(t *testing.T) {
	_, err := Open(Config{Path: filepath.Join(t.TempDir(), "missing.img")})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing image: %v", err)
	}
	if _, err := Open(Config{Path: t.TempDir()}); err == nil {
		t.Fatal("a directory was accepted as an image")
	}
	if _, err := Open(Config{Path: tempImage(t, 4096), QueueSize: 100}); err == nil {
		t.Fatal("queue size 100 accepted")
	}
}

func TestCapacityRoundsDown(t *testing.T) {
	d, err := Open(Config{Path: tempImage(t, 3*SectorSize+100)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Capacity() != 3 {
		t.Fatalf("capacity %d; want 3", d.Capacity())
	}
}

func TestConfigSpace(t *testing.T) {
	d, err := Open(Config{Path: tempImage(t, imgSize), QueueSize: 128, NumQueues: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	cfg := make([]byte, ConfigSize+8)
	d.ReadConfig(0, cfg)
	le := binary.LittleEndian
	if v := le.Uint64(cfg[0:]); v != imgSize/SectorSize {
		t.Errorf("capacity %d", v)
	}
	if v := le.Uint32(cfg[12:]); v != 126 {
		t.Errorf("seg_max %d; want 126", v)
	}
	if v := le.Uint32(cfg[8:]); v != sizeMax {
		t.Errorf("size_max %d", v)
	}
	if v := le.Uint32(cfg[20:]); v != 512 {
		t.Errorf("blk_size %d", v)
	}
	if v := le.Uint16(cfg[34:]); v != 2 {
		t.Errorf("num_queues %d", v)
	}
	if d.Features()&FDiscard != 0 {
		if v := le.Uint32(cfg[36:]); v != maxDiscardSectors {
			t.Errorf("max_discard_sectors %d", v)
		}
		if v := le.Uint32(cfg[40:]); v != maxDiscardSeg {
			t.Errorf("max_discard_seg %d", v)
		}
		if v := cfg[56]; v != 1 {
			t.Errorf("write_zeroes_may_unmap %d", v)
		}
	}
	if !bytes.Equal(cfg[ConfigSize:], make([]byte, 8)) {
		t.Error("bytes past the config are not zero")
	}
	part := make([]byte, 4)
	d.ReadConfig(20, part)
	if le.Uint32(part) != 512 {
		t.Error("partial config read at blk_size")
	}
	d.ReadConfig(1000, part)
	if le.Uint32(part) != 0 {
		t.Error("config read far past the end is not zero")
	}
	want := uint64(virtio.FVersion1 | virtio.FIndirectDesc | virtio.FEventIdx | FSegMax | FSizeMax | FBlkSize | FFlush | FMQ)
	if d.Features()&want != want || d.Features()&FRO != 0 {
		t.Errorf("features %#x lack %#x", d.Features(), want&^d.Features())
	}
}

func TestMultiQueueAndReset(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize), NumQueues: 2}, 0)
	a, b := pattern(4096, 1), pattern(4096, 2)
	if r := h.do(req{typ: TypeOut, sector: 0, out: a, queue: 0}); r.status != StatusOK {
		t.Fatal(r.status)
	}
	if r := h.do(req{typ: TypeOut, sector: 8, out: b, queue: 1}); r.status != StatusOK {
		t.Fatal(r.status)
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	h.dev.Notify(0) // after reset: ignored
	h.activate()
	r := h.do(req{typ: TypeIn, sector: 0, in: 8192, queue: 1})
	if r.status != StatusOK || !bytes.Equal(r.in, append(a, b...)) {
		t.Fatal("data written on two queues did not read back after reset")
	}
}

func TestActivateChecks(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	err := h.dev.Activate(t.Context(), virtio.Activation{Mem: h.mem, Interrupt: h.irq, Queues: make([]*queue.Queue, 1)})
	if err == nil {
		t.Fatal("second Activate accepted")
	}
	h.dev.Reset()
	err = h.dev.Activate(t.Context(), virtio.Activation{Mem: h.mem, Interrupt: h.irq, Queues: make([]*queue.Queue, 1), Features: 1 << 40})
	if err == nil {
		t.Fatal("Activate with features not offered accepted")
	}
}

// Many requests in flight at once, more than the interrupts delivered.
func TestBatch(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize)}, 0)
	d := h.drivers[0]
	d.ResetHeap()
	const n = 64
	var hdrs [n]uint64
	for i := range n {
		hdrs[i] = d.Alloc(16, 16)
		var hb [16]byte
		binary.LittleEndian.PutUint32(hb[0:], TypeIn)
		binary.LittleEndian.PutUint64(hb[8:], uint64(i))
		h.mem.WriteAt(hb[:], hdrs[i])
		d.Add(testSeg(hdrs[i], 16, false), testSeg(d.Alloc(512, 512), 512, true), testSeg(d.Alloc(1, 1), 1, true))
	}
	h.dev.Notify(0)
	deadline := time.After(10 * time.Second)
	for got := 0; got < n; {
		if _, _, ok := d.Used(); ok {
			got++
			continue
		}
		// As Linux's virtqueue_enable_cb: ask for an interrupt at the next
		// completion, then look again before sleeping.
		d.EnableInterrupts()
		if _, _, ok := d.Used(); ok {
			got++
			continue
		}
		select {
		case <-h.irq.ch:
		case <-deadline:
			t.Fatalf("%d of %d requests completed within 10s", got, n)
		}
	}
}
