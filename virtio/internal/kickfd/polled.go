package kickfd

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Polled waits on an FD's eventfd through the Go runtime's poller instead
// of a blocking read: the waiting goroutine parks and the poller wakes it
// directly, so no OS thread sits in read(2) holding a P (which the runtime
// then hands off and spins up another thread for). It reads a duplicate
// of the descriptor, which it makes non-blocking: that flag is shared with
// the FD, so the FD's own Wait must not be used while a Polled exists.
// Signal on the FD still wakes it.
type Polled struct {
	f *os.File
}

// NewPolled returns a poller-driven waiter on k's eventfd.
func NewPolled(k *FD) (*Polled, error) {
	fd, err := unix.FcntlInt(uintptr(k.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("kickfd: dup eventfd %d: %w", k.fd, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("kickfd: eventfd %d: set O_NONBLOCK: %w", fd, err)
	}
	// Never call Fd() on it: that would make it blocking again.
	return &Polled{f: os.NewFile(uintptr(fd), "kick-eventfd")}, nil
}

// Wait parks until the eventfd was signalled since the last Wait and
// clears it (all the signals meanwhile count as one). After Close it
// returns an error wrapping os.ErrClosed.
func (p *Polled) Wait() error {
	var b [8]byte
	if _, err := p.f.Read(b[:]); err != nil {
		return fmt.Errorf("kickfd: read eventfd: %w", err)
	}
	return nil
}

// Close closes the duplicate (not the FD's descriptor) and wakes a Wait in
// progress.
func (p *Polled) Close() error { return p.f.Close() }
