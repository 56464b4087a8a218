package virtio9p

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// slowIRQ's first Signal blocks until release is closed, as an irqfd
// write does on a 1-CPU host while the vCPU it woke runs; the others
// return at once.
type slowIRQ struct {
	calls   atomic.Int32
	entered chan struct{}
	release chan struct{}
}

func (s *slowIRQ) Signal(int) error {
	if s.calls.Add(1) == 1 {
		close(s.entered)
		<-s.release
	}
	return nil
}

// slowHarness is a harness re-activated with a slowIRQ.
func slowHarness(t *testing.T) (*harness, *slowIRQ) {
	h := newHarness(t, shareDir(t), hostfs.Options{}, Config{})
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	irq := &slowIRQ{entered: make(chan struct{}), release: make(chan struct{})}
	feat := h.dev.Features()
	h.drv = testdriver.New(h.mem, h.dev.MaxQueueSize(), 0x1000, testMem, 0)
	h.drv.EventIdx = true
	q, err := queue.New(h.mem, h.drv.L, virtio.QueueOptions(feat, h.dev.MaxQueueSize()))
	if err != nil {
		t.Fatal(err)
	}
	if err := h.dev.Activate(context.Background(), virtio.Activation{Mem: h.mem, Features: feat, Queues: []*queue.Queue{q}, Interrupt: irq}); err != nil {
		t.Fatal(err)
	}
	return h, irq
}

// TestPauseWaitsForInterrupts: Pause returns only once the interrupts of
// the replies pushed are signalled (a snapshot taken then has them in the
// interrupt controller's state).
func TestPauseWaitsForInterrupts(t *testing.T) {
	h, irq := slowHarness(t)
	h.drv.ResetHeap()
	h.submit(chain{msg: msg(tTversion, noTag, uint32(8192), "9P2000.L"), wlen: 64})
	h.dev.Notify(0)
	select {
	case <-irq.entered:
	case <-time.After(5 * time.Second):
		close(irq.release)
		t.Fatal("no interrupt for the reply")
	}
	paused := make(chan error, 1)
	go func() { paused <- h.dev.Pause() }()
	select {
	case err := <-paused:
		close(irq.release)
		t.Fatalf("Pause returned (%v) while the reply's interrupt was still being signalled", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(irq.release)
	if err := <-paused; err != nil {
		t.Fatal(err)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
}

// TestSlowInterruptHoldsNoReply: while one reply's interrupt is being
// delivered, the next reply still reaches the used ring. The interrupt
// used to be signalled inside the p9 server's send lock, so every other
// reply waited for it.
func TestSlowInterruptHoldsNoReply(t *testing.T) {
	h, irq := slowHarness(t)
	defer close(irq.release)
	used := func(what string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			h.drv.EnableInterrupts()
			if _, _, ok := h.drv.Used(); ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no used element within 5s (the first interrupt is still being signalled)", what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	h.drv.ResetHeap()
	h.submit(chain{msg: msg(tTversion, noTag, uint32(8192), "9P2000.L"), wlen: 64})
	h.dev.Notify(0)
	select {
	case <-irq.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no interrupt for the first reply")
	}
	used("first reply")
	h.drv.ResetHeap()
	h.submit(chain{msg: msg(tTversion, noTag, uint32(8192), "9P2000.L"), wlen: 64})
	h.dev.Notify(0)
	used("second reply")
}
