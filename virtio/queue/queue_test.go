package queue_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

const memSize = 1 << 20

type Desc = testdriver.Desc
type Seg = testdriver.Seg

func newMem(t testing.TB) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.New(guestmem.Region{GPA: 0, Data: make([]byte, memSize)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// setup lays out a queue of size entries with a mock driver and opens the
// device side with the given options.
func setup(t testing.TB, size uint16, o queue.Options) (*guestmem.Memory, *testdriver.Driver, *queue.Queue) {
	t.Helper()
	m := newMem(t)
	d := testdriver.New(m, size, 0x1000, memSize, o.NextAvail)
	d.EventIdx = o.EventIdx
	q, err := queue.New(m, d.L, o)
	if err != nil {
		t.Fatalf("queue.New: %v", err)
	}
	return m, d, q
}

func fill(t testing.TB, m *guestmem.Memory, gpa uint64, n int, seed byte) []byte {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	if err := m.WriteAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return b
}

func pop(t testing.TB, q *queue.Queue, c *queue.Chain) {
	t.Helper()
	ok, err := q.Pop(c)
	if err != nil || !ok {
		t.Fatalf("Pop = %v, %v; want a chain", ok, err)
	}
}

func wantViolation(t *testing.T, err error, kind queue.Violation) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want %v", kind)
	}
	if !errors.Is(err, queue.ErrGuest) {
		t.Fatalf("error %v does not match ErrGuest", err)
	}
	if got := queue.KindOf(err); got != kind {
		t.Fatalf("error %v is %v; want %v", err, got, kind)
	}
}

func TestChainReadWrite(t *testing.T) {
	m, d, q := setup(t, 8, queue.Options{})
	r1, r2 := d.Alloc(10, 1), d.Alloc(30, 1)
	w1, w2 := d.Alloc(5, 1), d.Alloc(100, 1)
	in := append(fill(t, m, r1, 10, 1), fill(t, m, r2, 30, 50)...)
	head, _ := d.Add(Seg{Addr: r1, Len: 10}, Seg{Addr: r2, Len: 30},
		Seg{Addr: w1, Len: 5, Write: true}, Seg{Addr: w2, Len: 100, Write: true})

	var c queue.Chain
	pop(t, q, &c)
	if c.Head() != head || len(c.Readable()) != 2 || len(c.Writable()) != 2 {
		t.Fatalf("chain head %d (want %d), %d readable, %d writable", c.Head(), head, len(c.Readable()), len(c.Writable()))
	}
	if c.ReadableLen() != 40 || c.WritableLen() != 105 {
		t.Fatalf("lengths %d/%d; want 40/105", c.ReadableLen(), c.WritableLen())
	}
	if c.Readable()[1].GPA != r2 || c.Writable()[0].GPA != w1 {
		t.Fatalf("buffer addresses wrong: %+v", c.Readable())
	}
	got := make([]byte, 40)
	if n, err := c.ReadAt(got, 0); n != 40 || err != nil || !bytes.Equal(got, in) {
		t.Fatalf("ReadAt = %d, %v, %x; want %x", n, err, got, in)
	}
	// A read across the buffer boundary.
	if n, err := c.ReadAt(got[:6], 7); n != 6 || err != nil || !bytes.Equal(got[:6], in[7:13]) {
		t.Fatalf("ReadAt(off 7) = %d, %v", n, err)
	}
	if n, err := c.ReadAt(got[:6], 38); n != 2 || err != io.EOF {
		t.Fatalf("ReadAt past the end = %d, %v; want 2, EOF", n, err)
	}
	out := bytes.Repeat([]byte{0xab}, 8)
	if n, err := c.WriteAt(out, 2); n != 8 || err != nil {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	b1, _ := m.Slice(w1, 5)
	b2, _ := m.Slice(w2, 5)
	if !bytes.Equal(b1, []byte{0, 0, 0xab, 0xab, 0xab}) || !bytes.Equal(b2, []byte{0xab, 0xab, 0xab, 0xab, 0xab}) {
		t.Fatalf("WriteAt across buffers wrote %x %x", b1, b2)
	}
	if n, err := c.WriteAt(out, 100); n != 5 || err != io.ErrShortWrite {
		t.Fatalf("WriteAt past the end = %d, %v; want 5, ErrShortWrite", n, err)
	}
	if err := q.Push(&c, 106); err == nil {
		t.Fatal("Push accepted more bytes written than the chain holds")
	}
	if err := q.Push(&c, 13); err != nil {
		t.Fatal(err)
	}
	id, n, ok := d.Used()
	if !ok || id != uint32(head) || n != 13 {
		t.Fatalf("used = %d, %d, %v; want %d, 13", id, n, ok, head)
	}
	if ok, err := q.Pop(&c); ok || err != nil {
		t.Fatalf("Pop on an empty queue = %v, %v", ok, err)
	}
}

func TestAppendRange(t *testing.T) {
	m, d, q := setup(t, 8, queue.Options{})
	a, b := d.Alloc(16, 1), d.Alloc(16, 1)
	fill(t, m, a, 16, 0)
	d.Add(Seg{Addr: a, Len: 16}, Seg{Addr: b, Len: 16})
	var c queue.Chain
	pop(t, q, &c)
	r := queue.AppendRange(nil, c.Readable(), 10, 10)
	if len(r) != 2 || r[0].GPA != a+10 || len(r[0].Data) != 6 || r[1].GPA != b || len(r[1].Data) != 4 {
		t.Fatalf("AppendRange(10, 10) = %+v", r)
	}
	if r := queue.AppendRange(nil, c.Readable(), 30, 10); len(r) != 1 || len(r[0].Data) != 2 {
		t.Fatalf("AppendRange past the end = %+v", r)
	}
	if r := queue.AppendRange(nil, c.Readable(), 40, 10); len(r) != 0 {
		t.Fatalf("AppendRange beyond = %+v", r)
	}
}

func TestIndirect(t *testing.T) {
	m, d, q := setup(t, 4, queue.Options{IndirectDesc: true})
	var segs []Seg
	for i := 0; i < 10; i++ { // more buffers than the queue has entries
		segs = append(segs, Seg{Addr: d.Alloc(64, 8), Len: 64, Write: i >= 6})
	}
	fill(t, m, segs[0].Addr, 64, 9)
	head, _ := d.AddIndirect(segs...)
	var c queue.Chain
	pop(t, q, &c)
	if c.Head() != head || len(c.Readable()) != 6 || len(c.Writable()) != 4 {
		t.Fatalf("indirect chain: head %d, %d readable, %d writable", c.Head(), len(c.Readable()), len(c.Writable()))
	}
	for i, b := range append(c.Readable(), c.Writable()...) {
		if b.GPA != segs[i].Addr {
			t.Errorf("buffer %d at %#x; want %#x", i, b.GPA, segs[i].Addr)
		}
	}
	if err := q.Push(&c, 256); err != nil {
		t.Fatal(err)
	}
	if id, n, ok := d.Used(); !ok || id != uint32(head) || n != 256 {
		t.Fatalf("used = %d, %d, %v", id, n, ok)
	}
}

// A direct chain may end in an indirect descriptor.
func TestDirectThenIndirect(t *testing.T) {
	_, d, q := setup(t, 4, queue.Options{IndirectDesc: true})
	hdr := d.Alloc(16, 8)
	table := d.Alloc(32, 16)
	w := d.Alloc(100, 1)
	d.WriteDescAt(table, 0, Desc{Addr: w, Len: 50, Flags: testdriver.FWrite | testdriver.FNext, Next: 1})
	d.WriteDescAt(table, 1, Desc{Addr: w + 50, Len: 50, Flags: testdriver.FWrite})
	d.WriteDesc(2, Desc{Addr: hdr, Len: 16, Flags: testdriver.FNext, Next: 3})
	d.WriteDesc(3, Desc{Addr: table, Len: 32, Flags: testdriver.FIndirect | testdriver.FWrite}) // WRITE is ignored here
	d.Publish(2)
	var c queue.Chain
	pop(t, q, &c)
	if c.ReadableLen() != 16 || c.WritableLen() != 100 || c.Descriptors() != 4 {
		t.Fatalf("got %d readable, %d writable bytes, %d descriptors", c.ReadableLen(), c.WritableLen(), c.Descriptors())
	}
}

// Ring indices start near 0xffff and wrap while chains flow.
func TestIndexWrapAround(t *testing.T) {
	for _, eventIdx := range []bool{false, true} {
		m, d, q := setup(t, 8, queue.Options{NextAvail: 0xfff3, NextUsed: 0xfff3, EventIdx: eventIdx})
		buf := d.Alloc(8, 8)
		var c queue.Chain
		for i := 0; i < 40; i++ {
			if err := m.PutUint64(buf, uint64(i)); err != nil {
				t.Fatal(err)
			}
			// Up to 3 chains in flight at once.
			for k := 0; k < 1+i%3; k++ {
				d.Add(Seg{Addr: buf, Len: 8}, Seg{Addr: d.Alloc(8, 4), Len: 8, Write: true})
			}
			for {
				ok, err := q.Pop(&c)
				if err != nil {
					t.Fatalf("round %d: %v", i, err)
				}
				if !ok {
					break
				}
				if err := q.Push(&c, uint32(c.Head())); err != nil {
					t.Fatal(err)
				}
			}
			for {
				id, n, ok := d.Used()
				if !ok {
					break
				}
				if n != id {
					t.Fatalf("round %d: used elem id %d len %d", i, id, n)
				}
			}
			d.ResetHeap()
			d.Alloc(8, 8)
		}
		if d.UsedIdx() != d.AvailIdx() || q.NextAvail() != d.AvailIdx() {
			t.Fatalf("indices: used %d, avail %d, device next avail %d", d.UsedIdx(), d.AvailIdx(), q.NextAvail())
		}
		if d.AvailIdx() > 0x100 {
			t.Fatalf("avail idx %#x did not wrap", d.AvailIdx())
		}
	}
}

// More than 65536 chains through a small queue from index 0.
func TestLongRun(t *testing.T) {
	_, d, q := setup(t, 4, queue.Options{})
	w := d.Alloc(1, 1)
	var c queue.Chain
	for i := 0; i < 70000; i++ {
		d.Add(Seg{Addr: w, Len: 1, Write: true})
		pop(t, q, &c)
		if err := q.Push(&c, 1); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := d.Used(); !ok {
			t.Fatalf("chain %d not returned", i)
		}
	}
	if d.FreeDescriptors() != 4 {
		t.Fatalf("%d free descriptors after the run; want 4", d.FreeDescriptors())
	}
}

func TestNeedEvent(t *testing.T) {
	cases := []struct {
		event, now, old uint16
		want            bool
	}{
		{0, 1, 0, true},           // crossed event 0
		{1, 1, 0, false},          // event 1 not yet passed (needs idx 2)
		{5, 10, 3, true},          // event inside (old, now]
		{10, 10, 3, false},        // not yet past
		{2, 10, 3, false},         // event before old: already signalled
		{0xfffe, 1, 0xfffd, true}, // wrap: 0xfffd -> 1 crosses 0xfffe
		{2, 1, 0xfffd, false},     // wrap: event ahead
		{0xffff, 0, 0xffff, true}, // 0xffff -> 0 crosses 0xffff
	}
	for _, c := range cases {
		if got := queue.NeedEvent(c.event, c.now, c.old); got != c.want {
			t.Errorf("NeedEvent(%#x, %#x, %#x) = %v; want %v", c.event, c.now, c.old, got, c.want)
		}
	}
}

func TestEventIdxSuppression(t *testing.T) {
	_, d, q := setup(t, 8, queue.Options{EventIdx: true, NextAvail: 0xfffe, NextUsed: 0xfffe})
	w := d.Alloc(1, 1)
	var c queue.Chain
	// The driver wants an interrupt once the used element at index 0 is
	// filled, i.e. when the used idx moves past 0.
	d.SetUsedEvent(0x0000)
	for i := 0; i < 3; i++ { // used idx 0xfffe -> 0xffff -> 0 -> 1
		d.Add(Seg{Addr: w, Len: 1, Write: true})
		pop(t, q, &c)
		if err := q.Push(&c, 1); err != nil {
			t.Fatal(err)
		}
		need, err := q.NeedInterrupt()
		if err != nil {
			t.Fatal(err)
		}
		if need != (i == 2) {
			t.Fatalf("push %d (used idx %#x): NeedInterrupt = %v", i, q.NextUsed(), need)
		}
	}
	if need, _ := q.NeedInterrupt(); need {
		t.Fatal("NeedInterrupt true with nothing pushed")
	}
	// Batch: two pushes, event in the middle of the batch.
	d.SetUsedEvent(0x0002)
	for i := 0; i < 2; i++ {
		d.Add(Seg{Addr: w, Len: 1, Write: true})
		pop(t, q, &c)
		if err := q.Push(&c, 1); err != nil {
			t.Fatal(err)
		}
	}
	if need, _ := q.NeedInterrupt(); !need {
		t.Fatal("batch crossing used_event did not ask for an interrupt")
	}
	// Kick suppression: the device publishes avail_event.
	more, err := q.EnableNotifications()
	if err != nil || more {
		t.Fatalf("EnableNotifications = %v, %v", more, err)
	}
	if d.AvailEvent() != q.NextAvail() {
		t.Fatalf("avail_event %#x; want %#x", d.AvailEvent(), q.NextAvail())
	}
	old := d.AvailIdx()
	d.Add(Seg{Addr: w, Len: 1, Write: true})
	if !d.NeedKick(old) {
		t.Fatal("driver was not asked to kick for the first new chain")
	}
	old = d.AvailIdx()
	d.Add(Seg{Addr: w, Len: 1, Write: true})
	if d.NeedKick(old) {
		t.Fatal("driver asked to kick again before the device caught up")
	}
	if more, _ := q.EnableNotifications(); !more {
		t.Fatal("EnableNotifications missed chains that arrived")
	}
}

func TestNoInterruptFlag(t *testing.T) {
	_, d, q := setup(t, 8, queue.Options{})
	w := d.Alloc(1, 1)
	var c queue.Chain
	d.Add(Seg{Addr: w, Len: 1, Write: true})
	pop(t, q, &c)
	q.Push(&c, 1)
	if need, _ := q.NeedInterrupt(); !need {
		t.Fatal("no interrupt without NO_INTERRUPT")
	}
	d.SetAvailFlags(queue.AvailFNoInterrupt)
	d.Add(Seg{Addr: w, Len: 1, Write: true})
	pop(t, q, &c)
	q.Push(&c, 1)
	if need, _ := q.NeedInterrupt(); need {
		t.Fatal("interrupt despite VIRTQ_AVAIL_F_NO_INTERRUPT")
	}
	// Kick suppression without event idx: the NO_NOTIFY flag.
	if err := q.DisableNotifications(); err != nil {
		t.Fatal(err)
	}
	if d.NeedKick(d.AvailIdx()) {
		t.Fatal("driver asked to kick while notifications are disabled")
	}
	if more, err := q.EnableNotifications(); more || err != nil {
		t.Fatalf("EnableNotifications = %v, %v", more, err)
	}
	if !d.NeedKick(d.AvailIdx()) {
		t.Fatal("driver not asked to kick after EnableNotifications")
	}
}

func TestZeroLengthBuffersSkipped(t *testing.T) {
	_, d, q := setup(t, 8, queue.Options{})
	r := d.Alloc(8, 8)
	w := d.Alloc(8, 8)
	// Zero-length descriptors with addresses far outside RAM are skipped.
	d.Add(Seg{Addr: ^uint64(0), Len: 0}, Seg{Addr: r, Len: 8}, Seg{Addr: 1 << 50, Len: 0, Write: true}, Seg{Addr: w, Len: 8, Write: true})
	var c queue.Chain
	pop(t, q, &c)
	if len(c.Readable()) != 1 || len(c.Writable()) != 1 || c.Descriptors() != 4 {
		t.Fatalf("got %d readable, %d writable, %d descriptors", len(c.Readable()), len(c.Writable()), c.Descriptors())
	}
}

// hostile builds a bad chain by hand and checks the queue fails with kind.
func TestHostile(t *testing.T) {
	const F, W, I = testdriver.FNext, testdriver.FWrite, testdriver.FIndirect
	cases := []struct {
		name     string
		indirect bool
		build    func(d *testdriver.Driver)
		kind     queue.Violation
	}{
		{"address past memory", false, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: memSize - 4, Len: 8})
			d.Publish(0)
		}, queue.BufferOutOfRange},
		{"addr+len overflow", false, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: ^uint64(0) - 2, Len: 8})
			d.Publish(0)
		}, queue.BufferOutOfRange},
		{"loop", false, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: 0, Len: 1, Flags: F, Next: 1})
			d.WriteDesc(1, Desc{Addr: 0, Len: 1, Flags: F, Next: 0})
			d.Publish(0)
		}, queue.ChainTooLong},
		{"self loop", false, func(d *testdriver.Driver) {
			d.WriteDesc(3, Desc{Addr: 0, Len: 0, Flags: F, Next: 3})
			d.Publish(3)
		}, queue.ChainTooLong},
		{"chain too long in an indirect table", true, func(d *testdriver.Driver) {
			table := d.Alloc(64, 16)
			for i := uint16(0); i < 4; i++ {
				d.WriteDescAt(table, i, Desc{Addr: 0, Len: 1, Flags: F, Next: (i + 1) % 4})
			}
			d.WriteDesc(0, Desc{Addr: table, Len: 64, Flags: I})
			d.Publish(0)
		}, queue.ChainTooLong},
		{"head index past the table", false, func(d *testdriver.Driver) {
			d.Publish(8)
		}, queue.BadIndex},
		{"next index past the table", false, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: 0, Len: 1, Flags: F, Next: 8})
			d.Publish(0)
		}, queue.BadIndex},
		{"next index past an indirect table", true, func(d *testdriver.Driver) {
			table := d.Alloc(32, 16)
			d.WriteDescAt(table, 0, Desc{Addr: 0, Len: 1, Flags: F, Next: 2})
			d.WriteDescAt(table, 1, Desc{Addr: 0, Len: 1})
			d.WriteDesc(0, Desc{Addr: table, Len: 32, Flags: I})
			d.Publish(0)
		}, queue.BadIndex},
		{"readable after writable", false, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: 0x100, Len: 4, Flags: W | F, Next: 1})
			d.WriteDesc(1, Desc{Addr: 0x200, Len: 4})
			d.Publish(0)
		}, queue.WriteOrder},
		{"zero-length writable then readable", false, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: 0, Len: 0, Flags: W | F, Next: 1})
			d.WriteDesc(1, Desc{Addr: 0x200, Len: 4})
			d.Publish(0)
		}, queue.WriteOrder},
		{"indirect not negotiated", false, func(d *testdriver.Driver) {
			table := d.Alloc(16, 16)
			d.WriteDescAt(table, 0, Desc{Addr: 0, Len: 1})
			d.WriteDesc(0, Desc{Addr: table, Len: 16, Flags: I})
			d.Publish(0)
		}, queue.IndirectNotNegotiated},
		{"nested indirect", true, func(d *testdriver.Driver) {
			inner := d.Alloc(16, 16)
			outer := d.Alloc(16, 16)
			d.WriteDescAt(inner, 0, Desc{Addr: 0, Len: 1})
			d.WriteDescAt(outer, 0, Desc{Addr: inner, Len: 16, Flags: I})
			d.WriteDesc(0, Desc{Addr: outer, Len: 16, Flags: I})
			d.Publish(0)
		}, queue.NestedIndirect},
		{"indirect table length not a multiple of 16", true, func(d *testdriver.Driver) {
			table := d.Alloc(32, 16)
			d.WriteDesc(0, Desc{Addr: table, Len: 24, Flags: I})
			d.Publish(0)
		}, queue.BadIndirect},
		{"empty indirect table", true, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: 0x100, Len: 0, Flags: I})
			d.Publish(0)
		}, queue.BadIndirect},
		{"indirect with NEXT", true, func(d *testdriver.Driver) {
			table := d.Alloc(16, 16)
			d.WriteDesc(0, Desc{Addr: table, Len: 16, Flags: I | F, Next: 1})
			d.WriteDesc(1, Desc{Addr: 0, Len: 1})
			d.Publish(0)
		}, queue.BadIndirect},
		{"indirect table too long", true, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: 0x10000, Len: 16 * (queue.DefaultMaxIndirect + 1), Flags: I})
			d.Publish(0)
		}, queue.BadIndirect},
		{"indirect table past memory", true, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: memSize - 16, Len: 32, Flags: I})
			d.Publish(0)
		}, queue.BadIndirect},
		{"indirect table wrapping", true, func(d *testdriver.Driver) {
			d.WriteDesc(0, Desc{Addr: ^uint64(0) - 15, Len: 32, Flags: I})
			d.Publish(0)
		}, queue.BadIndirect},
		{"buffer in indirect table past memory", true, func(d *testdriver.Driver) {
			table := d.Alloc(16, 16)
			d.WriteDescAt(table, 0, Desc{Addr: memSize, Len: 1, Flags: W})
			d.WriteDesc(0, Desc{Addr: table, Len: 16, Flags: I})
			d.Publish(0)
		}, queue.BufferOutOfRange},
		{"avail idx jump", false, func(d *testdriver.Driver) {
			d.SetAvailIdx(9) // 9 pending in a queue of 8
		}, queue.AvailJump},
		{"avail idx jump backwards", false, func(d *testdriver.Driver) {
			d.SetAvailIdx(0xffff)
		}, queue.AvailJump},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, d, q := setup(t, 8, queue.Options{IndirectDesc: c.indirect})
			c.build(d)
			var ch queue.Chain
			ok, err := q.Pop(&ch)
			if ok {
				t.Fatal("Pop returned a chain")
			}
			wantViolation(t, err, c.kind)
			// The queue stays failed, even for a good chain.
			d.SetAvailIdx(q.NextAvail())
			d.WriteDesc(5, Desc{Addr: 0x100, Len: 4})
			d.Publish(5)
			if ok, err2 := q.Pop(&ch); ok || !errors.Is(err2, queue.ErrGuest) {
				t.Fatalf("failed queue Pop = %v, %v", ok, err2)
			}
			if q.Err() == nil {
				t.Fatal("Err() is nil on a failed queue")
			}
			_ = m
		})
	}
}

// A chain of more than 4 GiB in one direction: every descriptor names the
// same 2 GiB of (lazily backed) RAM.
func TestChainTooBig(t *testing.T) {
	m, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: 1 << 31}) // lazily backed
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := testdriver.New(m, 8, 0x1000, 0x100000, 0)
	q, err := queue.New(m, d.L, queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint16(0); i < 3; i++ {
		d.WriteDesc(i, Desc{Addr: 0x100000, Len: 0x7ff00000, Flags: testdriver.FNext | testdriver.FWrite, Next: i + 1})
	}
	d.WriteDesc(3, Desc{Addr: 0x100000, Len: 1, Flags: testdriver.FWrite})
	d.Publish(0)
	var c queue.Chain
	_, err = q.Pop(&c)
	wantViolation(t, err, queue.ChainTooBig)
}

func TestBadLayout(t *testing.T) {
	m := newMem(t)
	good := queue.Layout{Size: 8, Desc: 0x1000, Avail: 0x2000, Used: 0x3000}
	if _, err := queue.New(m, good, queue.Options{}); err != nil {
		t.Fatalf("good layout refused: %v", err)
	}
	bad := map[string]queue.Layout{
		"size 0":              {Size: 0, Desc: 0x1000, Avail: 0x2000, Used: 0x3000},
		"size not power of 2": {Size: 6, Desc: 0x1000, Avail: 0x2000, Used: 0x3000},
		"size above max":      {Size: 512, Desc: 0x1000, Avail: 0x8000, Used: 0x9000},
		"desc misaligned":     {Size: 8, Desc: 0x1008, Avail: 0x2000, Used: 0x3000},
		"avail misaligned":    {Size: 8, Desc: 0x1000, Avail: 0x2001, Used: 0x3000},
		"used misaligned":     {Size: 8, Desc: 0x1000, Avail: 0x2000, Used: 0x3002},
		"desc past memory":    {Size: 8, Desc: memSize - 64, Avail: 0x2000, Used: 0x3000},
		"avail past memory":   {Size: 8, Desc: 0x1000, Avail: memSize - 16, Used: 0x3000},
		"used past memory":    {Size: 8, Desc: 0x1000, Avail: 0x2000, Used: memSize - 64},
		"used wraps":          {Size: 8, Desc: 0x1000, Avail: 0x2000, Used: ^uint64(0) - 3},
	}
	for name, l := range bad {
		_, err := queue.New(m, l, queue.Options{MaxSize: 256})
		if queue.KindOf(err) != queue.BadLayout {
			t.Errorf("%s: err = %v; want BadLayout", name, err)
		}
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	_, d, q := setup(t, 16, queue.Options{IndirectDesc: true, EventIdx: true})
	segs := []Seg{{Addr: d.Alloc(16, 8), Len: 16}, {Addr: d.Alloc(4096, 8), Len: 4096, Write: true}, {Addr: d.Alloc(1, 1), Len: 1, Write: true}}
	var c queue.Chain
	round := func() {
		d.Add(segs...)
		if ok, err := q.Pop(&c); !ok || err != nil {
			t.Fatalf("Pop = %v, %v", ok, err)
		}
		if err := q.Push(&c, 4097); err != nil {
			t.Fatal(err)
		}
		if _, err := q.NeedInterrupt(); err != nil {
			t.Fatal(err)
		}
		if _, err := q.EnableNotifications(); err != nil {
			t.Fatal(err)
		}
		d.Used()
	}
	round() // grow the chain's arrays once
	if n := testing.AllocsPerRun(1000, round); n != 0 {
		t.Fatalf("%v allocations per request; want 0", n)
	}
}
