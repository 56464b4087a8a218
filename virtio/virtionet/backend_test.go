package virtionet

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newSeqpacketBackend returns a FileBackend on one end of a SOCK_SEQPACKET
// pair and the other end's descriptor.
func newSeqpacketBackend(t *testing.T) (*FileBackend, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	b, err := NewFileBackend(os.NewFile(uintptr(fds[0]), "dev-end"), false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b, fds[1]
}

// within runs f and fails unless it returns within 5 s.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// TestFileBackendWaits: reads wait with poll(2), not in the runtime's
// poller, so deadlines and Close wake them through the backend's own
// eventfd: a passed deadline ends a blocked read and every later one
// until cleared, a future one fires, and Close ends a blocked read.
func TestFileBackendWaits(t *testing.T) {
	b, peer := newSeqpacketBackend(t)
	buf := make([]byte, 64)
	if _, err := b.ReadFrame(buf, false); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("empty, no wait: %v", err)
	}
	unix.Write(peer, []byte("frame"))
	if n, err := b.ReadFrame(buf, true); err != nil || string(buf[:n]) != "frame" {
		t.Fatalf("ReadFrame = %q, %v", buf[:n], err)
	}

	// A deadline set while a read waits ends it.
	go func() {
		time.Sleep(20 * time.Millisecond)
		b.SetDeadline(time.Now())
	}()
	if err := within(t, "a read past its deadline", func() error { _, err := b.ReadFrame(buf, true); return err }); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked read at the deadline: %v", err)
	}
	if _, err := b.ReadFrame(buf, false); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline: %v", err)
	}
	if err := b.WriteFrame([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after the deadline: %v", err)
	}
	// Cleared: reads work again, and a wait is a wait.
	b.SetDeadline(time.Time{})
	if _, err := b.ReadFrame(buf, false); !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("after clearing the deadline: %v", err)
	}
	// A future deadline fires.
	b.SetDeadline(time.Now().Add(30 * time.Millisecond))
	if err := within(t, "a read with a future deadline", func() error { _, err := b.ReadFrame(buf, true); return err }); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read until a future deadline: %v", err)
	}
	// Replaced before it fires, it does not.
	b.SetDeadline(time.Now().Add(20 * time.Millisecond))
	b.SetDeadline(time.Time{})
	time.Sleep(40 * time.Millisecond)
	unix.Write(peer, []byte("late"))
	if n, err := b.ReadFrame(buf, true); err != nil || string(buf[:n]) != "late" {
		t.Fatalf("after a replaced deadline: %q, %v", buf[:n], err)
	}

	// Close ends a waiting read and closes the descriptor.
	fd := b.PollFD()
	var before unix.Stat_t
	if err := unix.Fstat(fd, &before); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() {
		time.Sleep(20 * time.Millisecond)
		closed <- b.Close()
	}()
	if err := within(t, "a read during Close", func() error { _, err := b.ReadFrame(buf, true); return err }); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read during Close: %v", err)
	}
	if err := <-closed; err != nil { // Close returns once the read has left
		t.Fatalf("Close: %v", err)
	}
	// The number may have gone to another test's descriptor since: only
	// the same socket still there is a failure.
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err == nil && after.Dev == before.Dev && after.Ino == before.Ino {
		t.Error("the socket's descriptor still open after Close")
	}
	if err := b.Control(func(int) error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Control after Close: %v", err)
	}
}

// TestFileBackendWriteWaits: a write to a full socket waits for room,
// and a deadline ends that wait.
func TestFileBackendWriteWaits(t *testing.T) {
	b, peer := newSeqpacketBackend(t)
	frame := make([]byte, 1024)
	n := 0
	for ; n < 100000; n++ { // fill the peer's receive queue
		if _, err := unix.Write(b.PollFD(), frame); err == unix.EAGAIN {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		// Drain it: a Unix socket polls writable only once most of its
		// send buffer is free again.
		unix.SetNonblock(peer, true)
		var got [2048]byte
		for {
			if _, err := unix.Read(peer, got[:]); err != nil {
				return
			}
		}
	}()
	if err := within(t, "a write to a full socket", func() error { return b.WriteFrame(frame) }); err != nil {
		t.Fatalf("write once there was room: %v", err)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		b.SetDeadline(time.Now())
	}()
	if err := within(t, "a write past its deadline", func() error {
		for { // the queue may have had room for more than one
			if err := b.WriteFrame(frame); err != nil {
				return err
			}
		}
	}); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("blocked write at the deadline: %v", err)
	}
}

// TestNewFileBackendClosesOriginal: the backend works on a duplicate out
// of the runtime's poller and closes the file it was given.
func TestNewFileBackendClosesOriginal(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	f := os.NewFile(uintptr(fds[0]), "pollable") // a non-blocking file is in the runtime's poller
	b, err := NewFileBackend(f, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := f.Write([]byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("the original file after NewFileBackend: %v", err)
	}
	if b.PollFD() == fds[0] {
		t.Error("the backend kept the original descriptor, which the runtime polls")
	}
	unix.Write(fds[1], []byte("hello"))
	buf := make([]byte, 16)
	if n, err := b.ReadFrame(buf, true); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("ReadFrame = %q, %v", buf[:n], err)
	}
}
