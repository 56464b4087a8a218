package kickfd

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestSignalWakesWait(t *testing.T) {
	k, err := New()
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	checkSignalWakes(t, k, k.Wait)
}

// checkSignalWakes: signals on k before a wait are kept and count as one,
// and a later Signal wakes a wait in progress.
func checkSignalWakes(t *testing.T, k *FD, wait func() error) {
	t.Helper()
	for range 3 {
		if err := k.Signal(); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	woke := make(chan error, 1)
	go func() { woke <- wait() }()
	select {
	case err := <-woke:
		t.Fatalf("the wait returned without a signal (err %v): the signals before did not count as one", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := k.Signal(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-woke:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Signal did not wake the wait")
	}
}

func TestAdoptMakesBlockingAndLeavesOpen(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	k, err := Adopt(fd)
	if err != nil {
		t.Fatal(err)
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if flags&unix.O_NONBLOCK != 0 {
		t.Fatal("adopted eventfd is still non-blocking: Wait would spin on EAGAIN")
	}
	if k.Own() {
		t.Fatal("adopted eventfd reported as the device's own")
	}
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
		t.Fatalf("Close closed the transport's eventfd: %v", err)
	}
	own, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ofd := own.fd
	if err := own.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(ofd), unix.F_GETFL, 0); err == nil {
		t.Fatal("Close left the device's own eventfd open")
	}
}
