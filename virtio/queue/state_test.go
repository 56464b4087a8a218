package queue_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/virtio/queue"
)

func TestStateRestore(t *testing.T) {
	o := queue.Options{EventIdx: true}
	m, d, q := setup(t, 8, queue.Options{EventIdx: true, NextAvail: 0xfffe, NextUsed: 0xfffe})
	var c queue.Chain
	for i := range 3 {
		buf := d.Alloc(16, 1)
		d.Add(Seg{Addr: buf, Len: 16, Write: true})
		pop(t, q, &c)
		if err := q.Push(&c, uint32(i)); err != nil {
			t.Fatal(err)
		}
	}
	q.NeedInterrupt()
	head, _ := d.Add(Seg{Addr: d.Alloc(8, 1), Len: 8})
	s := q.State()
	if s.NextAvail != 1 || s.NextUsed != 1 || s.Signalled != 1 || s.Layout != d.L {
		t.Fatalf("State = %+v; want next avail/used/signalled 1 (wrapped) and layout %+v", s, d.L)
	}
	r, err := queue.Restore(m, d.L, o, s)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	// The restored queue takes the chain the original had not.
	pop(t, r, &c)
	if c.Head() != head {
		t.Fatalf("restored queue popped head %d; want %d", c.Head(), head)
	}
	if err := r.Push(&c, 0); err != nil {
		t.Fatal(err)
	}
	if got := d.UsedIdx(); got != 2 {
		t.Fatalf("used idx %d after a push on the restored queue; want 2", got)
	}
	// Signalled carries the event-idx decision: used_event 1 was crossed.
	d.SetUsedEvent(1)
	if need, _ := r.NeedInterrupt(); !need {
		t.Fatal("restored queue does not signal past used_event")
	}
}

func TestRestoreRejects(t *testing.T) {
	m, d, q := setup(t, 8, queue.Options{})
	s := q.State()
	for name, tc := range map[string]struct {
		edit func(s *queue.State)
		l    func(l *queue.Layout)
		want string
	}{
		"used idx":       {edit: func(s *queue.State) { s.NextUsed, s.NextAvail = 5, 5 }, want: "guest used idx 0 differs from saved 5"},
		"layout differs": {l: func(l *queue.Layout) { l.Desc += 16 }, want: "differs from the queue's saved"},
		"outside RAM":    {edit: func(s *queue.State) { s.Layout.Used = memSize }, l: func(l *queue.Layout) { l.Used = memSize }, want: "outside guest RAM"},
		"size":           {edit: func(s *queue.State) { s.Layout.Size = 6 }, l: func(l *queue.Layout) { l.Size = 6 }, want: "queue size 6"},
		"avail past":     {edit: func(s *queue.State) { s.NextAvail = 9 }, want: "next avail 9 is 9 past next used 0"},
	} {
		s, l := s, d.L
		if tc.edit != nil {
			tc.edit(&s)
		}
		if tc.l != nil {
			tc.l(&l)
		}
		_, err := queue.Restore(m, l, queue.Options{}, s)
		if !errors.Is(err, queue.ErrRestore) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Restore = %v; want ErrRestore with %q", name, err, tc.want)
		}
	}
}

func TestUnpop(t *testing.T) {
	_, d, q := setup(t, 8, queue.Options{})
	if err := q.Unpop(); err == nil {
		t.Fatal("Unpop with nothing in flight accepted")
	}
	h1, _ := d.Add(Seg{Addr: d.Alloc(8, 1), Len: 8, Write: true})
	var c queue.Chain
	pop(t, q, &c)
	if q.InFlight() != 1 {
		t.Fatalf("InFlight %d; want 1", q.InFlight())
	}
	if err := q.Unpop(); err != nil {
		t.Fatal(err)
	}
	if q.InFlight() != 0 || q.State().NextAvail != 0 {
		t.Fatalf("after Unpop: in flight %d, next avail %d", q.InFlight(), q.State().NextAvail)
	}
	pop(t, q, &c)
	if c.Head() != h1 {
		t.Fatalf("Pop after Unpop took head %d; want %d", c.Head(), h1)
	}
}
