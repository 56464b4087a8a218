package queue_test

import (
	"errors"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Fuzz memory: a low region holding the rings at fixed places, a hole, and a
// high region. The fuzz input is: byte 0 = log2(queue size) (mod 7, so at
// most 64), byte 1 = features (bit 0 EVENT_IDX, bit 1 INDIRECT_DESC), then
// the contents of the low region followed by the high region. The avail ring
// comes first (its idx is at input offset 4) and the descriptor table right
// after, so short inputs reach everything the driver controls; the used ring
// (device-written) is at the end of the low region.
const (
	fuzzLow      = 0x2000
	fuzzHighGPA  = 0x10000
	fuzzHighSize = 0x800
	fuzzAvail    = 0x0
	fuzzDesc     = 0x100
	fuzzUsed     = 0x1c00
)

func fuzzMemory(data []byte) *guestmem.Memory {
	low := make([]byte, fuzzLow)
	high := make([]byte, fuzzHighSize)
	n := copy(low, data)
	copy(high, data[n:])
	m, err := guestmem.New(guestmem.Region{GPA: 0, Data: low}, guestmem.Region{GPA: fuzzHighGPA, Data: high})
	if err != nil {
		panic(err)
	}
	return m
}

func FuzzQueue(f *testing.F) {
	for _, s := range queueSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		size := uint16(1) << (data[0] % 7)
		o := queue.Options{EventIdx: data[1]&1 != 0, IndirectDesc: data[1]&2 != 0, MaxIndirect: 64}
		m := fuzzMemory(data[2:])
		q, err := queue.New(m, queue.Layout{Size: size, Desc: fuzzDesc, Avail: fuzzAvail, Used: fuzzUsed}, o)
		if err != nil {
			t.Fatalf("fixed layout refused: %v", err)
		}
		var c queue.Chain
		// Each Pop consumes one avail entry, so at most size+1 calls can
		// return chains before the queue must be empty or failed.
		for i := 0; i <= int(size)+1; i++ {
			ok, err := q.Pop(&c)
			if err != nil {
				if !errors.Is(err, queue.ErrGuest) {
					t.Fatalf("non-guest error from guest input: %v", err)
				}
				if ok2, err2 := q.Pop(&c); ok2 || err2 == nil {
					t.Fatal("queue not failed after a guest error")
				}
				return
			}
			if !ok {
				break
			}
			if i == int(size) {
				t.Fatalf("more than %d chains from a queue of %d", size, size)
			}
			if c.Head() >= size {
				t.Fatalf("head %d in a queue of %d", c.Head(), size)
			}
			if c.Descriptors() > int(size)+int(o.MaxIndirect) {
				t.Fatalf("walked %d descriptors", c.Descriptors())
			}
			var r, w uint64
			for _, b := range c.Readable() {
				checkBuffer(t, m, b)
				r += uint64(len(b.Data))
			}
			for _, b := range c.Writable() {
				checkBuffer(t, m, b)
				w += uint64(len(b.Data))
			}
			if r != uint64(c.ReadableLen()) || w != uint64(c.WritableLen()) {
				t.Fatalf("lengths %d/%d; buffers sum to %d/%d", c.ReadableLen(), c.WritableLen(), r, w)
			}
			if err := q.Push(&c, c.WritableLen()); err != nil {
				t.Fatalf("Push: %v", err)
			}
			if _, err := q.NeedInterrupt(); err != nil {
				t.Fatalf("NeedInterrupt: %v", err)
			}
		}
		if _, err := q.EnableNotifications(); err != nil && !errors.Is(err, queue.ErrGuest) {
			t.Fatalf("EnableNotifications: %v", err)
		}
	})
}

// checkBuffer verifies that b is non-empty, inside RAM, and that its bytes
// are exactly the guest memory at b.GPA.
func checkBuffer(t *testing.T, m *guestmem.Memory, b queue.Buffer) {
	t.Helper()
	if len(b.Data) == 0 {
		t.Fatalf("empty buffer at %#x in a chain", b.GPA)
	}
	s, err := m.Slice(b.GPA, uint64(len(b.Data)))
	if err != nil {
		t.Fatalf("buffer at %#x len %#x outside memory: %v", b.GPA, len(b.Data), err)
	}
	if &s[0] != &b.Data[0] {
		t.Fatalf("buffer at %#x does not alias guest memory there", b.GPA)
	}
}

// queueSeeds builds well-formed rings with the mock driver: direct chains,
// an indirect chain, indices near wrap-around.
func queueSeeds() [][]byte {
	var seeds [][]byte
	mk := func(sizeLog, feat byte, build func(d *testdriver.Driver)) {
		low := make([]byte, fuzzLow)
		m, err := guestmem.New(guestmem.Region{GPA: 0, Data: low})
		if err != nil {
			panic(err)
		}
		size := uint16(1) << sizeLog
		d := testdriver.New(m, size, fuzzDesc, fuzzLow, 0)
		// Move the driver's rings to the fixed fuzz places.
		d.L.Desc, d.L.Avail, d.L.Used = fuzzDesc, fuzzAvail, fuzzUsed
		build(d)
		end := len(low)
		for end > 0 && low[end-1] == 0 {
			end--
		}
		seeds = append(seeds, append([]byte{sizeLog, feat}, low[:end]...))
	}
	mk(3, 0, func(d *testdriver.Driver) {
		d.Add(testdriver.Seg{Addr: 0x800, Len: 16}, testdriver.Seg{Addr: 0x900, Len: 0x100, Write: true}, testdriver.Seg{Addr: 0xa00, Len: 1, Write: true})
		d.Add(testdriver.Seg{Addr: 0xb00, Len: 16}, testdriver.Seg{Addr: 0xc00, Len: 1, Write: true})
	})
	mk(2, 3, func(d *testdriver.Driver) {
		tab := uint64(0x800)
		d.WriteDescAt(tab, 0, testdriver.Desc{Addr: 0x900, Len: 16, Flags: testdriver.FNext, Next: 1})
		d.WriteDescAt(tab, 1, testdriver.Desc{Addr: 0xa00, Len: 32, Flags: testdriver.FWrite})
		d.WriteDesc(0, testdriver.Desc{Addr: tab, Len: 32, Flags: testdriver.FIndirect})
		d.Publish(0)
		d.SetUsedEvent(0)
	})
	mk(4, 1, func(d *testdriver.Driver) {
		d.SetAvailIdx(0xfffe)
		d.Add(testdriver.Seg{Addr: 0x800, Len: 8}, testdriver.Seg{Addr: fuzzHighGPA, Len: 0x100, Write: true})
		d.Add(testdriver.Seg{Addr: 0x800, Len: 0}, testdriver.Seg{Addr: 0x900, Len: 8, Write: true})
		d.SetAvailIdx(2) // the device starts from 0: two chains pending
	})
	mk(1, 0, func(d *testdriver.Driver) { // a loop
		d.WriteDesc(0, testdriver.Desc{Addr: 0x800, Len: 1, Flags: testdriver.FNext, Next: 1})
		d.WriteDesc(1, testdriver.Desc{Addr: 0x800, Len: 1, Flags: testdriver.FNext, Next: 0})
		d.Publish(0)
	})
	return seeds
}

// TestFuzzSeeds regenerates testdata/fuzz/FuzzQueue when
// CORRAL_WRITE_SEEDS=1; otherwise it checks the committed seeds exist.
func TestFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzQueue", queueSeeds())
}
