package sockpair

import (
	"io"
	"testing"
)

// TestNewBuffers: a write completes before the other end reads (net.Pipe
// would block), and the bytes arrive; closing one end is EOF at the other.
func TestNewBuffers(t *testing.T) {
	a, b, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := a.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want hello", got, err)
	}
}
