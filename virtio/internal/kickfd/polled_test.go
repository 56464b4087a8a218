package kickfd

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A Polled waiter parks until a Signal on the FD (signals before a Wait
// count as one), and Close wakes a Wait in progress without closing the
// FD's own descriptor.
func TestPolled(t *testing.T) {
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	p, err := NewPolled(k)
	if err != nil {
		t.Fatal(err)
	}
	checkSignalWakes(t, k, p.Wait)
	woke := make(chan error, 1)
	go func() { woke <- p.Wait() }()
	time.Sleep(20 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Wait after Close: %v; want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake the parked Wait")
	}
	if _, err := unix.FcntlInt(uintptr(k.fd), unix.F_GETFL, 0); err != nil {
		t.Fatalf("Polled.Close closed the FD's descriptor: %v", err)
	}
	if err := k.Signal(); err != nil {
		t.Fatalf("Signal after the Polled closed: %v", err)
	}
}
