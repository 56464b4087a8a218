package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestHistogramBuckets(t *testing.T) {
	h := newHistogram()
	for _, g := range []time.Duration{
		100 * time.Nanosecond, // a read: not counted
		minGap,                // first bucket's lower edge
		49 * time.Microsecond, // first bucket
		50 * time.Microsecond, // second
		3 * time.Millisecond,  // fourth [2ms, 5ms)
		20 * time.Millisecond, // last, open-ended
		90 * time.Millisecond, // last
	} {
		h.add(g)
	}
	want := []int{2, 1, 0, 1, 0, 2}
	for i, c := range want {
		if h.count[i] != c {
			t.Errorf("bucket %d: %d gaps, want %d (all %v)", i, h.count[i], c, h.count)
		}
	}
	if h.reads != 7 {
		t.Errorf("reads %d, want 7", h.reads)
	}
	wantAway := minGap + 49*time.Microsecond + 50*time.Microsecond + 3*time.Millisecond + 110*time.Millisecond
	if h.away() != wantAway {
		t.Errorf("away %v, want %v", h.away(), wantAway)
	}
	var b bytes.Buffer
	h.print(&b, time.Second)
	if !strings.Contains(b.String(), "gaps [20ms, ∞): 2") || !strings.Contains(b.String(), "(11%)") {
		t.Errorf("printed:\n%s", b.String())
	}
}

func TestLoopEnds(t *testing.T) {
	h, el := loop(20 * time.Millisecond)
	if el < 20*time.Millisecond || h.reads == 0 {
		t.Fatalf("loop ran %v with %d reads", el, h.reads)
	}
}
