package task

import (
	"testing"
	"time"
)

func TestParseStartTicks(t *testing.T) {
	// A command name with spaces and a ')' of its own; starttime 4242.
	line := "123 (a) b (c)) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 4242 1000 10 18446744073709551615\n"
	if v, err := parseStartTicks([]byte(line)); err != nil || v != 4242 {
		t.Errorf("parseStartTicks = %d, %v; want 4242", v, err)
	}
	for _, bad := range []string{"", "123 (x S 1", "123 (x) S 1 2 3", "123 (x) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 -5 1"} {
		if v, err := parseStartTicks([]byte(bad)); err == nil {
			t.Errorf("parseStartTicks(%q) = %d, want an error", bad, v)
		}
	}
}

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
