package corral

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog"
)

// records is a slog.Handler that keeps what it is given.
type records struct {
	mu    sync.Mutex
	level slog.Level
	recs  []slog.Record
}

func (r *records) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// TestUnclaimedAccessesCountedNotFlooded has a guest hammer absent ports
// and MMIO: every access is counted, the log gets the first of each kind
// and then one a second.
func TestUnclaimedAccessesCountedNotFlooded(t *testing.T) {
	rec := &records{level: slog.LevelDebug}
	clock := time.Unix(1000, 0)
	m := bareMachine()
	m.log = slog.New(rec)
	m.glog = guestlog.New(m.log, func() time.Time { return clock })
	for range 1000 {
		m.unclaimedAccess(unclaimedPortWrite, 0x80, 1)
		m.unclaimedAccess(unclaimedPortRead, 0x3f8+0x100, 1)
	}
	m.unclaimedAccess(unclaimedMMIORead, 0xd000_0000, 4)
	want := UnclaimedAccesses{PortReads: 1000, PortWrites: 1000, MMIOReads: 1}
	if got := m.UnclaimedAccesses(); got != want || got.Total() != 2001 {
		t.Errorf("UnclaimedAccesses = %+v (total %d), want %+v", got, got.Total(), want)
	}
	if n := len(rec.recs); n != 3 {
		t.Fatalf("%d log records for 2001 accesses of 3 kinds at one instant, want 3", n)
	}
	clock = clock.Add(time.Second)
	m.unclaimedAccess(unclaimedPortWrite, 0x80, 1)
	if n := len(rec.recs); n != 4 {
		t.Fatalf("%d records a second later, want 4", n)
	}
	var count uint64
	rec.recs[3].Attrs(func(a slog.Attr) bool {
		if a.Key == "count" {
			count = a.Value.Uint64()
		}
		return true
	})
	if count != 1001 {
		t.Errorf("record says count %d, want 1001", count)
	}

	// With debug off, accesses are still counted and nothing is logged.
	quiet := &records{level: slog.LevelInfo}
	m2 := bareMachine()
	m2.log = slog.New(quiet)
	m2.glog = guestlog.New(m2.log, nil)
	m2.unclaimedAccess(unclaimedMMIOWrite, 0xfeb0_0000, 4)
	if got := m2.UnclaimedAccesses(); got.MMIOWrites != 1 || len(quiet.recs) != 0 {
		t.Errorf("debug off: counts %+v, %d records", got, len(quiet.recs))
	}
}
