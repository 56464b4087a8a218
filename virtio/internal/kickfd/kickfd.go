// Package kickfd is what a virtio device's queue worker sleeps on: one
// blocking eventfd, either the queue's kick eventfd that the transport
// handed over (virtio.KickWaiter; KVM signals it when the guest writes the
// notify register) or one of the device's own. The worker waits with a
// plain read(2) on its own thread, so a kick wakes the goroutine that
// serves the queue directly: no netpoller, no goroutine in between. Notify,
// host-side work and stop wake it by writing to the same eventfd.
//
// The descriptor is never given to the Go runtime's poller (it is
// blocking), so a blocked Wait holds its OS thread until a Signal; stop a
// worker by setting its stop condition and then calling Signal.
package kickfd

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// FD is one worker's eventfd.
type FD struct {
	fd  int
	own bool // created by New: Close closes it
}

// New creates an eventfd of the device's own (for a queue whose kicks
// only come through Notify).
func New() (*FD, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("kickfd: eventfd: %w", err)
	}
	return &FD{fd: fd, own: true}, nil
}

// Adopt wraps a transport's kick eventfd, making it blocking if it was
// not. Close leaves it open: the transport closes it.
func Adopt(fd int) (*FD, error) {
	if err := unix.SetNonblock(fd, false); err != nil {
		return nil, fmt.Errorf("kickfd: eventfd %d: clear O_NONBLOCK: %w", fd, err)
	}
	return &FD{fd: fd}, nil
}

// Int returns the descriptor, for poll(2) beside others; it stays the
// FD's (read it only through Wait).
func (k *FD) Int() int { return k.fd }

// Own reports whether the eventfd is the device's own (New), not adopted.
func (k *FD) Own() bool { return k.own }

// Wait blocks until the eventfd was signalled since the last Wait and
// clears it (all the signals meanwhile count as one).
func (k *FD) Wait() error {
	var b [8]byte
	for {
		_, err := unix.Read(k.fd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("kickfd: read eventfd %d: %w", k.fd, err)
		}
		return nil
	}
}

// Signal wakes the Wait in progress or the next one. It does not block
// (the counter cannot come near its limit: each Signal adds 1 and each
// Wait clears it).
func (k *FD) Signal() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	for {
		_, err := unix.Write(k.fd, b[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("kickfd: write eventfd %d: %w", k.fd, err)
		}
		return nil
	}
}

// Close closes the eventfd if it is the device's own.
func (k *FD) Close() error {
	if !k.own {
		return nil
	}
	return unix.Close(k.fd)
}
