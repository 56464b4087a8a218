package virtio9p

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// Fuzz9PTransport input: a device configuration, then requests the guest
// puts on the queue (each one chain: the raw T-message, size field and all,
// in readable segments, then writable bytes for the reply).
//
//	[0]  bit 0: read-only share; bit 1: batch (every request made
//	     available before one notify) rather than one at a time;
//	     bits 2-3: Config.MaxMessageSize (fuzzMsizes); bits 4-5:
//	     Config.MaxInFlight (fuzzInFlight); bit 6: start with a proper
//	     Tversion; bit 7: then a Tattach of fid 0
//	then per request (at most fuzzMaxReqs):
//	[0]    bit 0: set the size field to the message's length; bit 1:
//	       indirect table; bit 2: no writable part; bit 3: lengths below
//	       count 32-byte units
//	[1]    readable segment size (0: one segment)
//	[2]    writable segment size (0: one segment)
//	[3:5]  le16 writable bytes
//	[5:7]  le16 message length; the message is the next bytes, zero padded
const (
	fzReadOnly      = 1 << 0
	fzBatch         = 1 << 1
	fzMsizeShift    = 2
	fzInFlightShift = 4
	fzVersion       = 1 << 6
	fzAttach        = 1 << 7

	frFixSize  = 1 << 0
	frIndirect = 1 << 1
	frNoWrite  = 1 << 2
	frBig      = 1 << 3

	fuzzMem      = 16 << 20
	fuzzQueue    = 256
	fuzzMaxReqs  = 24
	fuzzMaxSegs  = 32 // per direction
	fuzzBudget   = 12 << 20
	fuzzDeadline = 10 * time.Second
	errEFAULT    = 14 // the p9 server's answer when a handler panics
)

var (
	fuzzMsizes   = [4]uint32{MinMessageSize, 8192, 64 << 10, DefaultMaxMessageSize}
	fuzzInFlight = [4]int{1, 2, 4, 16}
)

// fuzzReq is one chain.
type fuzzReq struct {
	flags         byte
	split, wsplit int
	wlen          int
	msg           []byte
}

type fuzzCase struct {
	flags byte
	reqs  []fuzzReq
}

func (fc fuzzCase) msize() uint32  { return fuzzMsizes[fc.flags>>fzMsizeShift&3] }
func (fc fuzzCase) inFlight() int  { return fuzzInFlight[fc.flags>>fzInFlightShift&3] }
func (fc fuzzCase) readOnly() bool { return fc.flags&fzReadOnly != 0 }

func parseFuzz9P(in []byte) (fuzzCase, bool) {
	if len(in) < 1 {
		return fuzzCase{}, false
	}
	fc := fuzzCase{flags: in[0]}
	if fc.flags&fzVersion != 0 {
		fc.reqs = append(fc.reqs, fuzzReq{msg: msg(tTversion, noTag, uint32(0xffffffff), "9P2000.L"), wlen: 64})
		if fc.flags&fzAttach != 0 {
			fc.reqs = append(fc.reqs, fuzzReq{msg: msg(tTattach, 1, uint32(0), uint32(0xffffffff), "", "", uint32(0)), wlen: 64})
		}
	}
	rest, budget := in[1:], 0
	for len(rest) >= 7 && len(fc.reqs) < fuzzMaxReqs {
		r := fuzzReq{flags: rest[0], split: int(rest[1]), wsplit: int(rest[2])}
		r.wlen = int(binary.LittleEndian.Uint16(rest[3:]))
		mlen := int(binary.LittleEndian.Uint16(rest[5:]))
		if r.flags&frBig != 0 {
			r.wlen *= 32
			mlen *= 32
			r.split *= 32
			r.wsplit *= 32
		}
		if r.flags&frNoWrite != 0 {
			r.wlen = 0
		}
		rest = rest[7:]
		r.msg = make([]byte, mlen)
		rest = rest[copy(r.msg, rest):]
		if r.flags&frFixSize != 0 && mlen >= 4 {
			binary.LittleEndian.PutUint32(r.msg, uint32(mlen))
		}
		if budget += mlen + r.wlen; budget > fuzzBudget {
			break
		}
		fc.reqs = append(fc.reqs, r)
	}
	return fc, true
}

// encode is parseFuzz9P's inverse for the requests given explicitly.
func (fc fuzzCase) encode() []byte {
	b := []byte{fc.flags}
	for _, r := range fc.reqs {
		b = append(b, r.flags, byte(r.split), byte(r.wsplit))
		b = binary.LittleEndian.AppendUint16(b, uint16(r.wlen))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(r.msg)))
		b = append(b, r.msg...)
	}
	return b
}

// segments splits n bytes at gpa into at most fuzzMaxSegs segments of
// split bytes (0: one segment).
func segments(gpa uint64, n, split int, write bool) []testdriver.Seg {
	if n == 0 {
		return nil
	}
	if split <= 0 {
		split = n
	}
	if (n+split-1)/split > fuzzMaxSegs {
		split = (n + fuzzMaxSegs - 1) / fuzzMaxSegs
	}
	var segs []testdriver.Seg
	for off := 0; off < n; off += split {
		segs = append(segs, testdriver.Seg{Addr: gpa + uint64(off), Len: uint32(min(split, n-off)), Write: write})
	}
	return segs
}

// fuzzRig is what every fuzz iteration shares: guest memory and the
// directory the shares are made in.
type fuzzRig struct {
	backing []byte
	mem     *guestmem.Memory
	base    string
	dirty   int // bytes of backing the last iteration may have written
}

// The memory is mapped, not a Go slice: the mock driver and the device
// share it as a guest and a device do, without synchronisation the race
// detector would report.
func newFuzzRig(t testing.TB) *fuzzRig {
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: fuzzMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	backing, err := mem.Slice(0, fuzzMem)
	if err != nil {
		t.Fatal(err)
	}
	return &fuzzRig{backing: backing, mem: mem, base: t.TempDir()}
}

// share makes the share afresh: what an earlier iteration wrote is gone
// (the guest may have made directories unreadable: undo that first).
func (r *fuzzRig) share(t testing.TB) string {
	dir := filepath.Join(r.base, "share")
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"d", "e"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "d", "b"), []byte("bee"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, 70<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../etc/passwd", filepath.Join(dir, "l")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// fuzzRun is one iteration: a device on a fresh share and queue.
type fuzzRun struct {
	t       testing.TB
	fc      fuzzCase
	dev     *Device
	fs      *hostfs.FS
	drv     *testdriver.Driver
	irq     *fakeIRQ
	failc   chan error
	fails   []error
	heads   map[uint16]int // available chain head -> request index
	wgpa    []uint64       // per request: its writable bytes' GPA
	done    []bool
	msize   uint32 // as the replies negotiated it, in one-at-a-time mode
	heapTop uint64 // highest heap address used
	failed  bool
}

// run drives fc through a device and checks every reply and the state
// the device leaves behind.
func (r *fuzzRig) run(t testing.TB, fc fuzzCase) {
	dir := r.share(t)
	fds, goroutines := countFDs(t), runtime.NumGoroutine()
	fsys, err := hostfs.New(dir, hostfs.Options{ReadOnly: fc.readOnly(), MaxFiles: 64})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := New(Config{Tag: "fuzz", FS: fsys, QueueSize: fuzzQueue, MaxMessageSize: fc.msize(), MaxInFlight: fc.inFlight()})
	if err != nil {
		t.Fatal(err)
	}
	clear(r.backing[:r.dirty])
	f := &fuzzRun{t: t, fc: fc, dev: dev, fs: fsys, irq: &fakeIRQ{ch: make(chan int, 1)}, failc: make(chan error, 16),
		heads: make(map[uint16]int), wgpa: make([]uint64, len(fc.reqs)), done: make([]bool, len(fc.reqs))}
	f.drv = testdriver.New(r.mem, fuzzQueue, 0x1000, fuzzMem, 0)
	f.heapTop = f.drv.HeapMark() // the rings end there
	defer func() { r.dirty = max(r.dirty, int(f.heapTop)) }()
	f.drv.EventIdx = true
	q, err := queue.New(r.mem, f.drv.L, virtio.QueueOptions(dev.Features(), fuzzQueue))
	if err != nil {
		t.Fatal(err)
	}
	err = dev.Activate(context.Background(), virtio.Activation{Mem: r.mem, Features: dev.Features(), Queues: []*queue.Queue{q}, Interrupt: f.irq,
		Fail: func(err error) {
			select {
			case f.failc <- err:
			default:
			}
		}})
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}

	if fc.flags&fzBatch != 0 {
		f.batch()
	} else {
		f.oneAtATime()
	}
	f.quiesce()
	f.drain()
	f.checkFails()
	if n := dev.Counters(); (n.ProtocolErrors > 0) != (len(f.fails) > 0) {
		t.Fatalf("counters %+v after %d failures", n, len(f.fails))
	}

	if err := dev.Reset(); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	if n := fsys.Files(); n != 0 {
		t.Fatalf("%d files held after Reset", n)
	}
	if err := dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		nfd, ng := countFDs(t), runtime.NumGoroutine()
		if nfd < fds {
			t.Fatalf("after Close: %d descriptors, %d before: one not ours was closed", nfd, fds)
		}
		if nfd == fds && ng <= goroutines {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("after Close: %d descriptors (was %d), %d goroutines (was %d):\n%s", nfd, fds, ng, goroutines, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// submit lays request i out and makes it available; false if the ring has
// no room for it.
func (f *fuzzRun) submit(i int) bool {
	r := f.fc.reqs[i]
	mark := f.drv.HeapMark()
	var segs []testdriver.Seg
	if len(r.msg) > 0 {
		a := f.drv.Alloc(uint64(len(r.msg)), 8)
		if err := f.drv.Mem.WriteAt(r.msg, a); err != nil {
			f.t.Fatal(err)
		}
		segs = append(segs, segments(a, len(r.msg), r.split, false)...)
	}
	if r.wlen > 0 {
		f.wgpa[i] = f.drv.Alloc(uint64(r.wlen), 8)
		segs = append(segs, segments(f.wgpa[i], r.wlen, r.wsplit, true)...)
	}
	f.heapTop = max(f.heapTop, f.drv.HeapMark())
	var head uint16
	ok := false
	switch {
	case len(segs) == 0:
	case r.flags&frIndirect != 0:
		head, ok = f.drv.AddIndirect(segs...)
	default:
		head, ok = f.drv.Add(segs...)
	}
	if !ok {
		f.drv.ReleaseTo(mark)
		f.done[i] = true // never made available
		return false
	}
	f.heads[head] = i
	return true
}

func (f *fuzzRun) oneAtATime() {
	for i := range f.fc.reqs {
		if !f.submit(i) {
			continue
		}
		f.dev.Notify(0)
		for !f.done[i] && !f.failed {
			f.next()
		}
		if f.failed {
			return
		}
	}
}

func (f *fuzzRun) batch() {
	for i := range f.fc.reqs {
		f.submit(i)
	}
	f.dev.Notify(0)
	for !f.failed && !f.allDone() {
		f.next()
	}
}

func (f *fuzzRun) allDone() bool {
	for _, d := range f.done {
		if !d {
			return false
		}
	}
	return true
}

// next waits for one completion (checked) or a device failure; a device
// that does neither within fuzzDeadline hangs.
func (f *fuzzRun) next() {
	deadline := time.After(fuzzDeadline)
	for {
		if id, n, ok := f.drv.Used(); ok {
			f.check(id, n)
			return
		}
		f.drv.EnableInterrupts()
		if id, n, ok := f.drv.Used(); ok {
			f.check(id, n)
			return
		}
		select {
		case <-f.irq.ch:
		case err := <-f.failc:
			f.fails = append(f.fails, err)
			f.failed = true
			return
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			f.t.Fatalf("no completion nor failure within %v", fuzzDeadline)
		}
	}
}

// drain collects failures reported late.
func (f *fuzzRun) drain() {
	for {
		select {
		case err := <-f.failc:
			f.fails = append(f.fails, err)
		default:
			return
		}
	}
}

// checkFails fails the test if the device failed for anything but a
// guest's fault.
func (f *fuzzRun) checkFails() {
	for _, err := range f.fails {
		if !errors.Is(err, queue.ErrGuest) || !strings.Contains(err.Error(), "guest gave") {
			f.t.Fatalf("device failed with %v: want a guest error", err)
		}
	}
}

// quiesce waits until no request is in flight in the device, so Reset
// finds the p9 server idle (see conn.settle) and every reply written.
func (f *fuzzRun) quiesce() {
	c := f.dev.active.Load()
	if c == nil {
		return
	}
	deadline := time.Now().Add(fuzzDeadline)
	for !c.quiet() {
		f.drain()
		f.checkFails() // a server that ended the connection is never quiet
		if time.Now().After(deadline) {
			f.t.Fatalf("requests still in flight after %v", fuzzDeadline)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// check verifies the reply to the chain with head id: a whole R-message
// in the writable bytes, with the guest's tag, answering the request's
// type (or Rlerror), and what the transport promises about framing,
// msize and counts.
func (f *fuzzRun) check(id, n uint32) {
	t := f.t
	i, ok := f.heads[uint16(id)]
	if !ok || f.done[i] {
		t.Fatalf("used element for head %d, which is not in flight", id)
	}
	f.done[i] = true
	delete(f.heads, uint16(id))
	req := f.fc.reqs[i]
	where := fmt.Sprintf("request %d (%d bytes, %d writable)", i, len(req.msg), req.wlen)
	if len(req.msg) < hdrLen || req.wlen < rlerrorLen {
		t.Fatalf("%s: answered, but it cannot hold a header and an Rlerror", where)
	}
	if int(n) > req.wlen || n < hdrLen {
		t.Fatalf("%s: used length %d", where, n)
	}
	b, err := f.drv.Mem.Slice(f.wgpa[i], uint64(n))
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	size, typ, tag := le.Uint32(b[hdrSize:]), b[hdrType], le.Uint16(b[hdrTag:])
	rsize, rtyp, rtag := le.Uint32(req.msg[hdrSize:]), req.msg[hdrType], le.Uint16(req.msg[hdrTag:])
	if size != n {
		t.Fatalf("%s: reply size field %d, used length %d", where, size, n)
	}
	if tag != rtag {
		t.Fatalf("%s: reply tag %#x, request tag %#x", where, tag, rtag)
	}
	if typ != tRlerror && typ != rtyp+1 {
		t.Fatalf("%s: type %d answered with type %d", where, rtyp, typ)
	}
	var errno uint32
	if typ == tRlerror {
		if n != rlerrorLen {
			t.Fatalf("%s: Rlerror of %d bytes", where, n)
		}
		errno = le.Uint32(b[hdrLen:])
		if errno == errEFAULT {
			t.Fatalf("%s: Rlerror EFAULT: a handler panicked", where)
		}
	}
	lies := rsize < hdrLen || rsize > uint32(len(req.msg))
	switch {
	case lies && errno != errEBADMSG:
		t.Fatalf("%s: size field %d answered with type %d errno %d, want EBADMSG", where, rsize, typ, errno)
	case !lies && rsize > f.fc.msize() && errno != errEMSGSIZE:
		t.Fatalf("%s: %d bytes over msize %d answered with type %d errno %d, want EMSGSIZE", where, rsize, f.fc.msize(), typ, errno)
	}
	batch := f.fc.flags&fzBatch != 0
	switch typ {
	case tRversion:
		got := le.Uint32(b[versionMSize:])
		asked := uint32(0)
		if rsize >= versionMSize+4 {
			asked = le.Uint32(req.msg[versionMSize:])
		}
		if got != 0 && got != min(asked, f.fc.msize()) {
			t.Fatalf("%s: Tversion msize %d answered with msize %d (device cap %d)", where, asked, got, f.fc.msize())
		}
		if got != 0 { // "unknown" leaves the server's msize as it was
			f.msize = got
		}
	case tTread + 1, tTreaddir + 1:
		count := le.Uint32(b[hdrLen:])
		if rlerrorLen+count != n {
			t.Fatalf("%s: reply of %d bytes with count %d", where, n, count)
		}
		if asked := le.Uint32(req.msg[countOff:]); count > asked {
			t.Fatalf("%s: %d bytes for a count of %d", where, count, asked)
		}
		if !batch && f.msize >= rlerrorLen && n > f.msize {
			t.Fatalf("%s: %d-byte reply over msize %d", where, n, f.msize)
		}
	}
}

// fuzz9PSeeds are sessions a driver runs plus broken ones: lying size
// fields, split and tiny buffers, oversize messages, odd msizes, garbage
// types, flushes and repeated tags in flight.
func fuzz9PSeeds() [][]byte {
	const va = fzVersion | fzAttach
	nofid := uint32(0xffffffff)
	fixed := func(m []byte, wlen int) fuzzReq { return fuzzReq{flags: frFixSize, msg: m, wlen: wlen} }
	rq := func(flags byte, split, wsplit, wlen int, m []byte) fuzzReq {
		return fuzzReq{flags: flags, split: split, wsplit: wsplit, wlen: wlen, msg: m}
	}
	lie := func(m []byte, size uint32) []byte {
		binary.LittleEndian.PutUint32(m, size)
		return m
	}
	const (
		tTlcreate  = 14
		tTwrite    = 118
		tTgetattr  = 24
		tTsetattr  = 26
		tTmkdir    = 72
		tTsymlink  = 16
		tTreadlink = 22
		tTrenameat = 74
		tTunlinkat = 76
		tTstatfs   = 8
		tTfsync    = 50
		tTxwalk    = 30
		tTlock     = 52
		tTlink     = 70
		tTmknod    = 18
		tTremove   = 122
	)
	walk := func(tag uint16, fid, newfid uint32, names ...string) []byte {
		f := []any{fid, newfid, uint16(len(names))}
		for _, n := range names {
			f = append(f, n)
		}
		return msg(tTwalk, tag, f...)
	}
	cases := []fuzzCase{
		// A read-write session touching most of 9P2000.L.
		{flags: va | 2<<fzMsizeShift | 2<<fzInFlightShift, reqs: []fuzzReq{
			fixed(walk(1, 0, 1, "d", "b"), 256),
			fixed(msg(tTlopen, 1, uint32(1), uint32(2)), 64),
			fixed(msg(tTread, 1, uint32(1), uint64(0), uint32(1<<20)), 4096),
			fixed(msg(tTwrite, 2, uint32(1), uint64(1), uint32(5), []byte("hello")), 64),
			fixed(msg(tTgetattr, 3, uint32(1), uint64(0x3fff)), 256),
			fixed(msg(tTsetattr, 4, uint32(1), uint32(1|8), uint32(0o4755), uint32(0), uint32(0), uint64(2), uint64(0), uint64(0), uint64(0), uint64(0)), 64),
			fixed(walk(5, 0, 2, "e"), 64),
			fixed(msg(tTlcreate, 5, uint32(2), "new", uint32(2|0o100), uint32(0o644), uint32(0)), 64),
			fixed(msg(tTmkdir, 6, uint32(0), "sub", uint32(0o755), uint32(0)), 64),
			fixed(msg(tTsymlink, 7, uint32(0), "sl", "/etc/shadow", uint32(0)), 64),
			fixed(walk(8, 0, 3, "sl"), 64),
			fixed(msg(tTreadlink, 8, uint32(3)), 256),
			fixed(msg(tTrenameat, 9, uint32(0), "sub", uint32(0), "sub2"), 64),
			fixed(msg(tTunlinkat, 10, uint32(0), "sub2", uint32(0x200)), 64),
			fixed(walk(11, 0, 4, "d"), 64),
			fixed(msg(tTlopen, 11, uint32(4), uint32(0)), 64),
			fixed(msg(tTreaddir, 12, uint32(4), uint64(0), uint32(0xffffffff)), 8192),
			fixed(msg(tTstatfs, 13, uint32(0)), 128),
			fixed(msg(tTfsync, 14, uint32(1), uint32(0)), 64),
			fixed(msg(tTxwalk, 15, uint32(1), uint32(9), "user.x"), 64),
			fixed(msg(tTlock, 16, uint32(1), uint8(1), uint32(0), uint64(0), uint64(0), uint32(1), "c"), 64),
			fixed(msg(tTlink, 17, uint32(0), uint32(1), "hard"), 64),
			fixed(msg(tTmknod, 18, uint32(0), "fifo", uint32(0o10644), uint32(0), uint32(0), uint32(0)), 64),
			fixed(msg(tTclunk, 19, uint32(1)), 64),
		}},
		// The same walk and open on a read-only share, and mutations refused.
		{flags: fzReadOnly | va, reqs: []fuzzReq{
			fixed(walk(1, 0, 1, "d", "b"), 256),
			fixed(msg(tTlopen, 1, uint32(1), uint32(2)), 64),
			fixed(msg(tTlcreate, 2, uint32(0), "x", uint32(2), uint32(0o644), uint32(0)), 64),
			fixed(msg(tTmkdir, 3, uint32(0), "y", uint32(0o755), uint32(0)), 64),
			fixed(msg(tTunlinkat, 4, uint32(0), "d", uint32(0x200)), 64),
			fixed(msg(tTremove, 5, uint32(1)), 64),
			fixed(walk(6, 0, 2, ".."), 64),
			fixed(walk(7, 0, 2, "l", "x"), 64),
		}},
		// Size fields that lie: past the chain, below the header, 4 GiB.
		{flags: va, reqs: []fuzzReq{
			{msg: lie(msg(tTclunk, 1, uint32(0)), 200), wlen: 64},
			{msg: lie(msg(tTclunk, 2, uint32(0)), 3), wlen: 64},
			{msg: lie(msg(tTclunk, 3, uint32(0)), 0xffffffff), wlen: 64},
			{msg: lie(walk(4, 0, 1, "d"), 9), wlen: 64}, // shorter than its fields
		}},
		// Before Tversion, and Tversion with odd msizes.
		{flags: 0, reqs: []fuzzReq{
			fixed(msg(tTattach, 1, uint32(0), nofid, "", "", uint32(0)), 64),
			fixed(msg(tTversion, noTag, uint32(4097), "9P2000.L"), 64),
			fixed(msg(tTversion, noTag, uint32(7), "9P2000.L"), 64),
			fixed(msg(tTversion, noTag, uint32(0), "9P2000.L"), 64),
			fixed(msg(tTversion, noTag, uint32(1<<30), "9P2000.L"), 64),
			fixed(msg(tTversion, noTag, uint32(8192), "9P2000.u"), 64),
			fixed(msg(tTversion, noTag, uint32(8192)), 64),
			fixed(msg(tTattach, 1, uint32(0), nofid, "", "", uint32(0)), 64),
		}},
		// A failed version, then a Tversion larger than the old msize.
		{flags: 1 << fzMsizeShift, reqs: []fuzzReq{
			fixed(msg(tTversion, noTag, uint32(4096), "9P2000.L"), 64),
			fixed(msg(tTversion, noTag, uint32(8192), "bogus"), 64),
			fixed(msg(tTversion, noTag, uint32(8192), "9P2000.L", make([]byte, 5000)), 64),
			fixed(msg(tTattach, 1, uint32(0), nofid, "", "", uint32(0)), 64),
		}},
		// Split buffers: one byte per readable and writable segment, indirect.
		{flags: va | 3<<fzInFlightShift, reqs: []fuzzReq{
			rq(frFixSize, 1, 1, 256, walk(1, 0, 1, "d", "b")),
			rq(frFixSize|frIndirect, 3, 5, 64, msg(tTlopen, 1, uint32(1), uint32(0))),
			rq(frFixSize|frIndirect, 1, 1, 4096, msg(tTread, 1, uint32(1), uint64(0), uint32(4096))),
			rq(frFixSize, 2, 7, 64, msg(tTgetattr, 1, uint32(1), uint64(0x3fff))),
		}},
		// Oversize: a write over msize, a reply larger than the writable
		// part, a big read into 4 KiB buffers.
		{flags: va | 0<<fzMsizeShift, reqs: []fuzzReq{
			fixed(walk(1, 0, 1, "big"), 64),
			fixed(msg(tTlopen, 1, uint32(1), uint32(2)), 64),
			rq(frFixSize|frBig, 4096/32, 0, 64/32, append(msg(tTwrite, 1, uint32(1), uint64(0), uint32(8192)), make([]byte, 8192-23)...)),
			fixed(msg(tTread, 1, uint32(1), uint64(0), uint32(8192)), 4096),
			fixed(msg(tTread, 1, uint32(1), uint64(0), uint32(8192)), 100),
		}},
		// Garbage types, an R-message as a request, an undecodable walk,
		// no writable part, a short header.
		{flags: va, reqs: []fuzzReq{
			fixed(msg(0, 1), 64),
			fixed(msg(255, 2, uint32(7)), 64),
			fixed(msg(tRlerror, 3, uint32(5)), 64),
			fixed(msg(tRversion, 4, uint32(4096), "9P2000.L"), 64),
			fixed(msg(tTwalk, 5, uint32(0), uint32(1), uint16(3)), 64),
		}},
		{flags: va, reqs: []fuzzReq{rq(frFixSize|frNoWrite, 0, 0, 0, msg(tTclunk, 1, uint32(0)))}},
		{flags: va, reqs: []fuzzReq{fixed([]byte{9, 0, 0}, 64)}},
		{flags: va, reqs: []fuzzReq{fixed(msg(tTclunk, 1, uint32(0)), 10)}},
		// Batches: repeated tags in flight, flushes, clunks of fids in use.
		{flags: va | fzBatch | 1<<fzInFlightShift, reqs: []fuzzReq{
			fixed(walk(7, 0, 1, "d"), 256),
			fixed(walk(7, 0, 2, "d", "b"), 256),
			fixed(msg(tTflush, 8, uint16(7)), 64),
			fixed(msg(tTlopen, 7, uint32(2), uint32(0)), 64),
			fixed(msg(tTread, 7, uint32(2), uint64(0), uint32(100)), 256),
			fixed(msg(tTclunk, 7, uint32(2)), 64),
			fixed(msg(tTflush, 9, uint16(1234)), 64),
			fixed(msg(tTclunk, 7, uint32(0)), 64),
		}},
		{flags: va | fzBatch | 3<<fzInFlightShift | 3<<fzMsizeShift, reqs: []fuzzReq{
			fixed(walk(1, 0, 1, "big"), 64),
			fixed(msg(tTlopen, 1, uint32(1), uint32(0)), 64),
			fixed(msg(tTread, 2, uint32(1), uint64(0), uint32(80<<10)), 65000), // reply larger than the writable part
			fixed(msg(tTread, 3, uint32(1), uint64(4096), uint32(1)), 64),
			fixed(lie(msg(tTread, 4, uint32(1), uint64(0), uint32(1)), 1<<30), 64),
		}},
	}
	var seeds [][]byte
	for _, c := range cases {
		seeds = append(seeds, c.encode())
	}
	return seeds
}

func Fuzz9PTransport(f *testing.F) {
	for _, s := range fuzz9PSeeds() {
		f.Add(s)
	}
	rig := newFuzzRig(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		fc, ok := parseFuzz9P(in)
		if !ok {
			return
		}
		// A hang the deadlines below do not catch (a Reset that never
		// returns) still ends as a crash the fuzzer reports, with stacks.
		watchdog := time.AfterFunc(3*fuzzDeadline, func() {
			buf := make([]byte, 1<<20)
			panic(fmt.Sprintf("iteration still running after %v:\n%s", 3*fuzzDeadline, buf[:runtime.Stack(buf, true)]))
		})
		defer watchdog.Stop()
		rig.run(t, fc)
	})
}

func TestFuzz9PSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "Fuzz9PTransport", fuzz9PSeeds())
}
