package queue_test

import (
	"testing"

	"github.com/corral-vmm/corral/virtio/queue"
)

// PushUsed writes every entry and moves the used idx once, past all of
// them; the interrupt decision covers the whole batch (EVENT_IDX across a
// wrap), and entries cannot outnumber the chains in flight or over-report
// what was written.
func TestPushUsedPublishesOnce(t *testing.T) {
	_, d, q := setup(t, 8, queue.Options{EventIdx: true, NextAvail: 0xfffe, NextUsed: 0xfffe})
	var heads []uint16
	for range 3 {
		h, _ := d.Add(Seg{Addr: d.Alloc(16, 1), Len: 16, Write: true})
		heads = append(heads, h)
	}
	var c queue.Chain
	var used []queue.Used
	for i := range 3 {
		pop(t, q, &c)
		if c.RingDescriptors() != 1 {
			t.Fatalf("RingDescriptors = %d, want 1", c.RingDescriptors())
		}
		if _, err := c.Used(17); err == nil {
			t.Fatal("Used(17) of a 16-byte chain accepted")
		}
		u, err := c.Used(uint32(10 + i))
		if err != nil {
			t.Fatal(err)
		}
		used = append(used, u)
		if d.UsedIdx() != 0xfffe {
			t.Fatalf("used idx %#x moved before PushUsed", d.UsedIdx())
		}
	}
	d.SetUsedEvent(0x0000) // the interrupt is due once the entry at 0 is used
	if err := q.PushUsed(used[:2]); err != nil {
		t.Fatal(err)
	}
	if d.UsedIdx() != 0 || q.NextUsed() != 0 {
		t.Fatalf("used idx %#x (queue %#x) after two; want 0", d.UsedIdx(), q.NextUsed())
	}
	if need, _ := q.NeedInterrupt(); need {
		t.Fatal("interrupt asked before used idx passed used_event")
	}
	if err := q.PushUsed(used[2:]); err != nil {
		t.Fatal(err)
	}
	if need, _ := q.NeedInterrupt(); !need {
		t.Fatal("no interrupt after used idx passed used_event")
	}
	for i := range 3 {
		id, n, ok := d.Used()
		if !ok || id != uint32(heads[i]) || n != uint32(10+i) {
			t.Fatalf("used entry %d = %d, %d, %v; want %d, %d", i, id, n, ok, heads[i], 10+i)
		}
	}
	if err := q.PushUsed(used[:1]); err == nil {
		t.Fatal("PushUsed with no chain in flight accepted")
	}
	if err := q.PushUsed(nil); err != nil {
		t.Fatal(err)
	}
}

// RingDescriptors counts the entries of the queue's table a chain holds,
// not those of its indirect table.
func TestRingDescriptors(t *testing.T) {
	_, d, q := setup(t, 8, queue.Options{IndirectDesc: true})
	b := d.Alloc(64, 1)
	d.Add(Seg{Addr: b, Len: 8}, Seg{Addr: b + 8, Len: 8, Write: true}, Seg{Addr: b + 16, Len: 8, Write: true})
	d.AddIndirect(Seg{Addr: b, Len: 8}, Seg{Addr: b + 8, Len: 8, Write: true}, Seg{Addr: b + 16, Len: 8, Write: true})
	var c queue.Chain
	for _, want := range []int{3, 1} {
		pop(t, q, &c)
		if c.RingDescriptors() != want {
			t.Fatalf("RingDescriptors = %d, want %d", c.RingDescriptors(), want)
		}
	}
}
