package task

import (
	"testing"
	"time"
)

func TestProcessBegun(t *testing.T) {
	b := ProcessBegun()
	now := time.Now()
	// The test binary began before this test and, run by go test, not
	// long before; /proc's clock ticks are 10 ms.
	if b.After(now) || now.Sub(b) > 10*time.Minute {
		t.Errorf("ProcessBegun %v, now %v", b, now)
	}
	if now.Sub(b) < time.Microsecond {
		t.Errorf("ProcessBegun is now (%v): /proc/self/stat not read", b)
	}
}

func TestStartTimes(t *testing.T) {
	b, s := time.Unix(100, 5), time.Unix(100, 900)
	gb, gs, ok := parseStartTimes(startTimes(b, s))
	if !ok || !gb.Equal(b) || !gs.Equal(s) {
		t.Errorf("round trip: %v %v %v", gb, gs, ok)
	}
	for _, bad := range []string{"", "1", "a,b", "5,4", "0,1", "1,2,3"} {
		if _, _, ok := parseStartTimes(bad); ok {
			t.Errorf("parseStartTimes(%q) ok", bad)
		}
	}
}
