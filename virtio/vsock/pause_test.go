package vsock

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Pause keeps connections: data both ways during the pause waits, and
// flows after Resume.
func TestPauseKeepsConnections(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	l, _ := g.dev.Listen(80)
	c := g.connectFromGuest(l, 5, 80)
	if err := g.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	r := g.dev.run.Load()
	for i, q := range []*queue.Queue{r.w.rxq, r.w.txq, r.w.evq} {
		if n := q.InFlight(); n != 0 {
			t.Fatalf("queue %d: %d chains in flight after Pause", i, n)
		}
	}
	wrote := make(chan error, 1)
	go func() { _, err := c.Write([]byte("from host")); wrote <- err }()
	txUsed := g.txd.UsedIdx()
	g.send(hdr(OpRW, 5, 80), []byte("from guest"))
	g.quiet(50 * time.Millisecond)
	if g.txd.UsedIdx() != txUsed {
		t.Fatal("a guest packet was taken while paused")
	}
	if err := g.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatalf("host Write across the pause: %v", err)
	}
	if p := g.expect(OpRW, 80, 5); string(p.payload) != "from host" {
		t.Fatalf("guest got %q", p.payload)
	}
	buf := make([]byte, 32)
	c.SetReadDeadline(time.Now().Add(waitTime))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "from guest" {
		t.Fatalf("host Read = %q, %v", buf[:n], err)
	}
	if got := g.counters(); got.TransportResets != 0 {
		t.Fatalf("a plain pause reset the transport: %+v", got)
	}
}

// restoredQueues returns queues at the states of the paused device's.
func restoredQueues(t *testing.T, g *guest) []*queue.Queue {
	t.Helper()
	r := g.dev.run.Load()
	opts := virtio.QueueOptions(g.dev.Features(), g.dev.MaxQueueSize())
	var qs []*queue.Queue
	for _, q := range []*queue.Queue{r.w.rxq, r.w.txq, r.w.evq} {
		s := q.State()
		nq, err := queue.Restore(g.mem, s.Layout, opts, s)
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, nq)
	}
	return qs
}

// A device restored from a snapshot (fresh, activated paused at the saved
// queues) sends TRANSPORT_RESET after Resume, once the guest posts an
// event buffer, and counts it.
func TestRestoreSendsTransportReset(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	l, _ := g.dev.Listen(80)
	g.connectFromGuest(l, 5, 80)
	g.dev.Pause()
	state, err := g.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	qs := restoredQueues(t, g)
	g.dev.Close()

	dev, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	err = dev.Activate(t.Context(), virtio.Activation{Mem: g.mem, Features: dev.Features(), Queues: qs, Interrupt: g.irq, Paused: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.RestoreState(state); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	g.dev = dev
	if err := dev.Resume(); err != nil {
		t.Fatal(err)
	}
	g.quiet(20 * time.Millisecond) // no event buffer yet
	g.postEvent()
	var id, n uint32
	g.wait("the TRANSPORT_RESET event", func() bool {
		var ok bool
		id, n, ok = g.evd.Used()
		return ok
	})
	ev, _ := g.mem.Uint32(g.evBufs[uint16(id)])
	if n != eventLen || ev != EventTransportReset {
		t.Fatalf("event %#x len %d; want TRANSPORT_RESET", ev, n)
	}
	if got := dev.Counters(); got.TransportResets != 1 {
		t.Fatalf("counters %+v", got)
	}
	// The guest reconnects to a host listener of the restored device.
	l2, _ := dev.Listen(80)
	g.connectFromGuest(l2, 6, 80)
}

// Restoring into the paused device itself resets its host connections at
// once (ErrReset), then sends the event after Resume.
func TestRestoreResetsHostConns(t *testing.T) {
	g := newGuest(t, gopts{})
	g.postRx(16)
	g.postEvent()
	l, _ := g.dev.Listen(80)
	c := g.connectFromGuest(l, 5, 80)
	g.dev.Pause()
	state, _ := g.dev.SaveState()
	if err := g.dev.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(waitTime))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, ErrReset) {
		t.Fatalf("host Read after restore = %v; want ErrReset", err)
	}
	g.dev.Resume()
	g.wait("the TRANSPORT_RESET event", func() bool { _, _, ok := g.evd.Used(); return ok })
	if got := g.counters(); got.TransportResets != 1 || got.Conns != 0 {
		t.Fatalf("counters %+v", got)
	}
}

func TestRestoreStateRejects(t *testing.T) {
	g := newGuest(t, gopts{})
	good, _ := g.dev.SaveState()
	for name, tc := range map[string]struct {
		data []byte
		want string
	}{
		"short":   {good[:3], "3 bytes (want 10)"},
		"version": {append([]byte{2, 0}, good[2:]...), "version 2"},
		"cid":     {append(append([]byte(nil), good[:2]...), 2, 0, 0, 0, 0, 0, 0, 0), "guest CID 2 outside"},
	} {
		err := g.dev.RestoreState(tc.data)
		if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: RestoreState = %v; want ErrState with %q", name, err, tc.want)
		}
	}
}

// FuzzRestoreState: arbitrary bytes never panic, and only a state of the
// right size, version and a guest CID is taken.
func FuzzRestoreState(f *testing.F) {
	d, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	good, _ := d.SaveState()
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := d.RestoreState(data); err == nil && len(data) != stStateSize {
			t.Fatalf("took %d bytes", len(data))
		}
	})
}
