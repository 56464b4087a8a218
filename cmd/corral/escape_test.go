package main

import (
	"io"
	"strings"
	"testing"
)

func TestEscapeReader(t *testing.T) {
	cases := []struct {
		in, out      string
		quits, helps int
	}{
		{"hello", "hello", 0, 0},
		{"ab\x01xcd", "ab", 1, 0},
		{"a\x01\x01b", "a\x01b", 0, 0},
		{"a\x01hb", "ab", 0, 1},
		{"a\x01zb", "ab", 0, 0},
	}
	for _, c := range cases {
		quits, helps := 0, 0
		r := newEscapeReader(strings.NewReader(c.in), func() { quits++ }, func() { helps++ })
		got, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != c.out || quits != c.quits || helps != c.helps {
			t.Errorf("%q: got %q quits=%d helps=%d, want %q %d %d", c.in, got, quits, helps, c.out, c.quits, c.helps)
		}
	}
}

// TestEscapeAcrossReads checks a Ctrl-A at the end of one read and its
// command byte at the start of the next.
func TestEscapeAcrossReads(t *testing.T) {
	quit := false
	r := newEscapeReader(io.MultiReader(strings.NewReader("a\x01"), strings.NewReader("xb")), func() { quit = true }, func() {})
	got, _ := io.ReadAll(r)
	if string(got) != "a" || !quit {
		t.Fatalf("got %q quit=%v", got, quit)
	}
}
