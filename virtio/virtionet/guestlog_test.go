package virtionet

import (
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog/guestlogtest"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// A guest that breaks the transmit queue, resets the device and does it
// again 1000 times (each cycle lays out fresh rings, so more is slow) is counted exactly and logged once per second of the
// (here stopped) clock.
func TestTxFaultFloodCountedNotLogged(t *testing.T) {
	h := newHarness(t, opts{vnet: true})
	// Swap in a logger with a stopped clock while no goroutine runs.
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	logs := &guestlogtest.Warnings{}
	stopped := time.Unix(1000, 0)
	h.dev.glog = guestlog.New(slog.New(logs), func() time.Time { return stopped })
	const n = 1000
	for i := range n {
		h.activate()
		a := h.txd.Alloc(11, 16)
		h.txd.Add(testdriver.Seg{Addr: a, Len: 11}) // shorter than the header
		h.dev.Notify(TxQueue)
		if err := h.expectFail(); !errors.Is(err, queue.ErrGuest) {
			t.Fatalf("cycle %d: %v; want a guest error", i, err)
		}
		if err := h.dev.Reset(); err != nil {
			t.Fatal(err)
		}
	}
	if c := h.dev.Counters().ProtocolErrors; c != n {
		t.Fatalf("ProtocolErrors = %d after %d broken chains", c, n)
	}
	if logs.Count() != 1 {
		t.Fatalf("%d log records for %d queue failures within one second; want 1", logs.Count(), n)
	}
}
