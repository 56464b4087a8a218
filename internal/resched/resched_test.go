package resched

import (
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	var p Point
	t0 := time.Now()
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, false}, // the first Check starts the period
		{Every - time.Microsecond, false},
		{Every, true},                     // a period has passed
		{Every + time.Millisecond, false}, // the yield started a new one
		{2*Every - time.Microsecond, false},
		{2 * Every, true},
		{10 * Every, true}, // a long iteration: one yield, not several
		{10*Every + 1, false},
	}
	for _, s := range steps {
		if got := p.due(t0.Add(s.at)); got != s.want {
			t.Fatalf("due at +%v = %v, want %v", s.at, got, s.want)
		}
	}
}

func TestCheckAllocates(t *testing.T) {
	var p Point
	if n := testing.AllocsPerRun(100, p.Check); n != 0 {
		t.Fatalf("Check allocates %v times per call", n)
	}
}
