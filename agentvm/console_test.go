package agentvm

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestConsoleRingLines(t *testing.T) {
	var next bytes.Buffer
	r := newConsoleRing(&next, 3)
	in := "one\r\ntw" + "o\nthree\n" + "four\nfi"
	for _, chunk := range []string{"one\r\ntw", "o\nthree\n", "four\nfi"} {
		if n, err := r.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if next.String() != in {
		t.Errorf("next writer got %q, want %q", next.String(), in)
	}
	if got, want := r.tail(10), []string{"two", "three", "four", "fi"}; !reflect.DeepEqual(got, want) {
		t.Errorf("tail(10) = %q, want %q (the oldest line dropped, the partial line kept)", got, want)
	}
	if got, want := r.tail(2), []string{"four", "fi"}; !reflect.DeepEqual(got, want) {
		t.Errorf("tail(2) = %q, want %q", got, want)
	}
	r.Write([]byte("ve\nsix\nseven\n"))
	if got, want := r.tail(-1), []string{"five", "six", "seven"}; !reflect.DeepEqual(got, want) {
		t.Errorf("after wrapping: %q, want %q", got, want)
	}
}

func TestConsoleRingLongLine(t *testing.T) {
	r := newConsoleRing(nil, 4)
	long := strings.Repeat("x", 3*maxLine)
	r.Write([]byte(long[:maxLine-1]))
	r.Write([]byte(long[maxLine-1:] + "\nshort\n"))
	got := r.tail(-1)
	if len(got) != 2 || got[0] != long[:maxLine] || got[1] != "short" {
		t.Errorf("tail = %d lines (first %d bytes), want the long line cut at %d bytes and then \"short\"", len(got), len(got[0]), maxLine)
	}
}

func TestConsoleRingMarkers(t *testing.T) {
	r := newConsoleRing(nil, 4)
	r.Write([]byte("[    1.0] corral-agent: error: guest setup: mounting 9p share \"root\": no such device\n"))
	select {
	case <-r.panicked:
		t.Fatal("panicked before any panic")
	default:
	}
	r.Write([]byte("[    2.0] Kernel panic - not syncing: Attempted to kill init!\n"))
	r.Write([]byte("Kernel panic - not syncing: again\n")) // a second one must not close twice
	select {
	case <-r.panicked:
	default:
		t.Fatal("a panic line did not close panicked")
	}
	if got, want := r.agentErrors(), []string{`guest setup: mounting 9p share "root": no such device`}; !reflect.DeepEqual(got, want) {
		t.Errorf("agentErrors = %q, want %q", got, want)
	}
	for i := range 20 {
		fmt.Fprintf(r, "corral-agent: error: %d\n", i)
	}
	if n := len(r.agentErrors()); n != 8 {
		t.Errorf("%d agent error lines kept, want at most 8", n)
	}
}

func TestConsoleRingZeroLines(t *testing.T) {
	r := newConsoleRing(nil, 0)
	r.Write([]byte("a\nb\n"))
	if got := r.tail(5); len(got) != 0 {
		t.Errorf("tail of a 0-line ring = %q", got)
	}
}
