package task

import (
	"bytes"
	"strings"
	"testing"
)

// countingWriter records each Write.
type countingWriter struct{ writes []string }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes = append(c.writes, string(p))
	return len(p), nil
}

// TestLineWriterBatches: a console fed a byte at a time reaches the log
// a line at a time (or less often), unchanged.
func TestLineWriterBatches(t *testing.T) {
	var c countingWriter
	w := newLineWriter(&c)
	in := "[    0.000000] Linux version 6.1\n[    0.1] Command line: console=ttyS0\npartial"
	for i := range len(in) {
		if n, err := w.Write([]byte{in[i]}); n != 1 || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if len(c.writes) != 2 {
		t.Errorf("%d writes for 2 lines: %q", len(c.writes), c.writes)
	}
	if got := strings.Join(c.writes, ""); got != strings.TrimSuffix(in, "partial") {
		t.Errorf("passed on %q", got)
	}
	// Several lines in one Write go as one.
	c.writes = nil
	w.Write([]byte(" line\nb\nc"))
	if len(c.writes) != 1 || c.writes[0] != "partial line\nb\n" {
		t.Errorf("writes %q", c.writes)
	}
}

// TestLineWriterLongLine: an unfinished line is not held past
// lineBufMax.
func TestLineWriterLongLine(t *testing.T) {
	var c countingWriter
	w := newLineWriter(&c)
	long := bytes.Repeat([]byte("x"), lineBufMax-1)
	w.Write(long)
	if len(c.writes) != 0 {
		t.Fatalf("wrote %d bytes of an unfinished line", len(c.writes[0]))
	}
	w.Write([]byte("yz"))
	if len(c.writes) != 1 || len(c.writes[0]) != lineBufMax+1 {
		t.Errorf("writes %d", len(c.writes))
	}
}
