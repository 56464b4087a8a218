package blk

import (
	"log/slog"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog/guestlogtest"
)

func TestCounters(t *testing.T) {
	h := newHarness(t, Config{Path: tempImage(t, imgSize), Serial: "s"}, FDiscard|FWriteZeroes)
	steps := []struct {
		r    req
		want byte
	}{
		{req{typ: TypeOut, sector: 8, out: pattern(8192, 1)}, StatusOK},
		{req{typ: TypeIn, sector: 8, in: 4096}, StatusOK},
		{req{typ: TypeIn, sector: imgSize / SectorSize, in: 512}, StatusIOErr}, // past the end
		{req{typ: TypeOut, sector: 0, out: pattern(100, 2)}, StatusIOErr},      // partial sector
		{req{typ: TypeFlush}, StatusOK},
		{req{typ: TypeGetID, in: IDBytes}, StatusOK},
		{req{typ: TypeDiscard, out: make([]byte, dwzSize)}, StatusUnsupp}, // not negotiated
		{req{typ: 99}, StatusUnsupp},
	}
	for i, s := range steps {
		if r := h.do(s.r); r.status != s.want {
			t.Fatalf("step %d: status %d; want %d", i, r.status, s.want)
		}
	}
	h.expectFail(req{typ: TypeIn, noStatus: true})
	want := Counters{
		In: 2, Out: 2, Flush: 1, GetID: 1, Discard: 1,
		ReadBytes: 4096, WriteBytes: 8192,
		Unsupported: 2, GuestErrors: 2, ProtocolErrors: 1,
	}
	if got := h.dev.Counters(); got != want {
		t.Fatalf("Counters() = %+v\nwant         %+v", got, want)
	}
}

// A guest repeating one fault 10000 times is counted exactly and logged at
// most once per second of the (here stopped) clock.
func TestGuestFaultFlood(t *testing.T) {
	logs := &guestlogtest.Warnings{}
	stopped := time.Unix(1000, 0)
	h := newHarness(t, Config{
		Path: tempImage(t, imgSize), ReadOnly: true,
		Logger: slog.New(logs), now: func() time.Time { return stopped },
	}, 0)
	const n = 10000
	for range n {
		if r := h.do(req{typ: TypeOut, sector: 0, out: pattern(512, 1)}); r.status != StatusIOErr {
			t.Fatalf("write to a read-only disk: status %d", r.status)
		}
	}
	if c := h.dev.Counters(); c.GuestErrors != n || c.Out != n {
		t.Fatalf("after %d refused writes: %+v", n, c)
	}
	if logs.Count() != 0 {
		t.Fatalf("%d log records for refused requests; want none (they are counted)", logs.Count())
	}
	// Malformed chains fail the queue: the driver resets and tries again.
	const cycles = 10000
	for range cycles {
		h.expectFail(req{typ: TypeIn, noStatus: true})
		if err := h.dev.Reset(); err != nil {
			t.Fatal(err)
		}
		h.activate()
	}
	if c := h.dev.Counters().ProtocolErrors; c != cycles {
		t.Fatalf("ProtocolErrors = %d after %d failures", c, cycles)
	}
	if logs.Count() != 1 {
		t.Fatalf("%d log records for %d queue failures within one second; want 1", logs.Count(), cycles)
	}
}
