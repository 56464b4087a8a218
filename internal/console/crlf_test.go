package console

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestCRLFWriter(t *testing.T) {
	cases := []struct {
		writes []string
		want   string
	}{
		{[]string{"a\nb"}, "a\r\nb"},
		{[]string{"a\r\nb"}, "a\r\nb"},
		{[]string{"a\r", "\nb\n"}, "a\r\nb\r\n"},
		{[]string{"\n\n"}, "\r\n\r\n"},
		{[]string{"x\r", "y\n"}, "x\ry\r\n"},
	}
	for _, c := range cases {
		var out bytes.Buffer
		w := NewCRLFWriter(&out)
		for _, s := range c.writes {
			if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
				t.Fatalf("%q: Write = %d, %v", c.writes, n, err)
			}
		}
		if out.String() != c.want {
			t.Errorf("%q: got %q, want %q", c.writes, out.String(), c.want)
		}
	}
}

// shortWriter takes at most n bytes, then fails.
type shortWriter struct {
	n   int
	out bytes.Buffer
}

func (s *shortWriter) Write(p []byte) (int, error) {
	if len(p) > s.n {
		s.out.Write(p[:s.n])
		return s.n, io.ErrShortWrite
	}
	return s.out.Write(p)
}

// TestCRLFWriterShort: a short write reports the input bytes fully written.
func TestCRLFWriterShort(t *testing.T) {
	for n, want := range map[int]int{0: 0, 1: 1, 2: 1, 3: 2, 4: 3} {
		w := NewCRLFWriter(&shortWriter{n: n})
		got, err := w.Write([]byte("a\nbc")) // "a\r\nbc"
		if got != want || !errors.Is(err, io.ErrShortWrite) {
			t.Errorf("after %d output bytes: Write = %d, %v; want %d", n, got, err, want)
		}
	}
}
