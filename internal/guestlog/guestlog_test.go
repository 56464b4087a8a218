package guestlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recorder is a slog.Handler that keeps the records it is given.
type recorder struct {
	mu    sync.Mutex
	level slog.Level
	recs  []slog.Record
}

func (r *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= r.level }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func (r *recorder) count() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.recs) }

func attr(rec slog.Record, key string) (slog.Value, bool) {
	var v slog.Value
	found := false
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v, found = a.Value, true
			return false
		}
		return true
	})
	return v, found
}

// fakeClock is a clock tests move by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(level slog.Level) (*Logger, *recorder, *fakeClock) {
	rec := &recorder{level: level}
	clk := &fakeClock{t: time.Unix(1000, 0)}
	return New(slog.New(rec), clk.now), rec, clk
}

func TestFirstThenOnePerInterval(t *testing.T) {
	l, rec, clk := newTest(slog.LevelInfo)
	for range 10000 {
		l.Warn("guest did a bad thing", "n", 1)
	}
	if n := rec.count(); n != 1 {
		t.Fatalf("10000 faults at one instant: %d records; want 1", n)
	}
	clk.advance(Interval - time.Nanosecond)
	l.Warn("guest did a bad thing")
	if n := rec.count(); n != 1 {
		t.Fatalf("a record %v after the first was logged", Interval-time.Nanosecond)
	}
	clk.advance(time.Nanosecond)
	l.Warn("guest did a bad thing")
	if n := rec.count(); n != 2 {
		t.Fatalf("%d records after an interval; want 2", n)
	}
	v, ok := attr(rec.recs[1], "suppressed")
	if !ok || v.Uint64() != 10000 {
		t.Fatalf("second record suppressed = %v (present %v); want 10000", v, ok)
	}
	if _, ok := attr(rec.recs[0], "suppressed"); ok {
		t.Fatal("first record carries a suppressed count")
	}
}

func TestSteadyFloodIsBounded(t *testing.T) {
	l, rec, clk := newTest(slog.LevelInfo)
	// 10000 faults 1 ms apart: 10 s, so the first plus one a second.
	for range 10000 {
		l.Error("guest flood")
		clk.advance(time.Millisecond)
	}
	if n := rec.count(); n < 10 || n > 11 {
		t.Fatalf("%d records over 10 s; want 10 or 11", n)
	}
	// One more after a quiet interval flushes the last suppressed count:
	// every fault is then either a record or counted in one.
	clk.advance(Interval)
	l.Error("guest flood")
	var total uint64
	for _, r := range rec.recs {
		total++
		if v, ok := attr(r, "suppressed"); ok {
			total += v.Uint64()
		}
	}
	if total != 10001 {
		t.Fatalf("records plus suppressed counts = %d; want 10001", total)
	}
}

func TestKindsAreIndependent(t *testing.T) {
	l, rec, _ := newTest(slog.LevelInfo)
	for range 100 {
		l.Warn("kind a")
		l.Warn("kind b")
	}
	if n := rec.count(); n != 2 {
		t.Fatalf("%d records for two kinds; want 2", n)
	}
}

// Kinds past the table's bound share one slot, so a caller that builds
// messages dynamically cannot grow memory or the log without bound.
func TestKindTableBounded(t *testing.T) {
	l, rec, _ := newTest(slog.LevelInfo)
	for i := range 10 * maxKinds {
		l.Warn(fmt.Sprintf("kind %d", i))
	}
	if n := rec.count(); n != maxKinds {
		t.Fatalf("%d records for %d kinds; want %d", n, 10*maxKinds, maxKinds)
	}
	if len(l.kinds) > maxKinds {
		t.Fatalf("%d kinds kept; bound is %d", len(l.kinds), maxKinds)
	}
}

// countingValuer counts how often it is formatted.
type countingValuer struct{ n *int }

func (c countingValuer) LogValue() slog.Value { *c.n++; return slog.StringValue("x") }

func TestDisabledLevelFormatsNothing(t *testing.T) {
	l, rec, _ := newTest(slog.LevelInfo)
	formatted := 0
	for range 100 {
		l.Debug("guest debug", "v", countingValuer{&formatted})
	}
	if rec.count() != 0 || formatted != 0 {
		t.Fatalf("disabled debug: %d records, %d formats; want 0, 0", rec.count(), formatted)
	}
	if l.Enabled(slog.LevelDebug) || !l.Enabled(slog.LevelWarn) {
		t.Fatal("Enabled does not follow the handler's level")
	}
	// A disabled level does not use up the kind's allowance either.
	l.Warn("guest debug")
	if rec.count() != 1 {
		t.Fatal("a kind first seen at a disabled level was suppressed")
	}
}

func TestHex(t *testing.T) {
	if s := Hex(0xfe000000).LogValue().String(); s != "0xfe000000" {
		t.Fatalf("Hex = %q", s)
	}
}

func TestNilLoggerAndConcurrency(t *testing.T) {
	l := New(nil, nil)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				l.Warn("concurrent")
			}
		})
	}
	wg.Wait()
}
