package console

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrNotStoppable is returned by NewInput for a reader that a VMM could not
// unblock: a Read that waits for data would outlive the machine.
var ErrNotStoppable = errors.New("console: input cannot be unblocked (want an *os.File, a reader with SetReadDeadline, or an in-memory reader)")

// errRegular says a file never blocks and must not be reopened (a new open
// file description would have its own offset).
var errRegular = errors.New("console: regular file")

// Reopen returns a private copy of f opened anew through /proc/self/fd with
// flag (os.O_RDONLY or os.O_WRONLY) and O_NONBLOCK, so it joins Go's poller:
// it takes deadlines and Close unblocks a Read or Write in progress. Being a
// new open file description, its non-blocking mode never reaches f or the
// processes sharing f's description (a shell's terminal). It works for
// terminals, pipes, FIFOs and character devices; it fails for sockets, for
// regular files (which never block) and without /proc.
func Reopen(f *os.File, flag int) (*os.File, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("console: reopen %s: %w", f.Name(), err)
	}
	var nfd int
	var oerr error
	// Control, unlike Fd, leaves f's own blocking mode alone.
	cerr := sc.Control(func(fd uintptr) {
		var st unix.Stat_t
		if oerr = unix.Fstat(int(fd), &st); oerr != nil {
			return
		}
		if m := st.Mode & unix.S_IFMT; m == unix.S_IFREG || m == unix.S_IFDIR || m == unix.S_IFSOCK {
			oerr = errRegular
			if m == unix.S_IFSOCK {
				oerr = errors.New("console: a socket cannot be reopened")
			}
			return
		}
		nfd, oerr = unix.Open(fmt.Sprintf("/proc/self/fd/%d", fd), flag|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	})
	if cerr != nil {
		return nil, fmt.Errorf("console: reopen %s: %w", f.Name(), cerr)
	}
	if oerr != nil {
		return nil, fmt.Errorf("console: reopen %s: %w", f.Name(), oerr)
	}
	return os.NewFile(uintptr(nfd), f.Name()), nil
}

// Input is a console input source a VMM can always stop: Stop makes a Read
// in progress return and later Reads fail, so the goroutine reading it ends
// with the machine.
type Input struct {
	r       io.Reader
	private *os.File // our own copy of an *os.File, closed by Stop
	dl      interface{ SetReadDeadline(time.Time) error }
	once    sync.Once
	stopped chan struct{}
}

// NewInput makes r stoppable without taking it from its owner:
//   - an *os.File terminal, pipe, FIFO or device is read through a private
//     non-blocking copy (Reopen), closed by Stop; the caller's descriptor
//     keeps its mode and stays open;
//   - a regular file, *strings.Reader, *bytes.Reader or *bytes.Buffer never
//     blocks and is read as is;
//   - another reader needs a working SetReadDeadline (net.Conn, an *os.File
//     in the poller): Stop sets a deadline in the past and Release clears it;
//   - anything else (an io.Pipe, a bufio.Reader...) gives ErrNotStoppable.
func NewInput(r io.Reader) (*Input, error) {
	in := &Input{r: r, stopped: make(chan struct{})}
	switch v := r.(type) {
	case *strings.Reader, *bytes.Reader, *bytes.Buffer:
		return in, nil
	case *os.File:
		pf, err := Reopen(v, os.O_RDONLY)
		if err == nil {
			in.r, in.private = pf, pf
			return in, nil
		}
		if errors.Is(err, errRegular) {
			return in, nil
		}
	}
	if d, ok := r.(interface{ SetReadDeadline(time.Time) error }); ok {
		if err := d.SetReadDeadline(time.Time{}); err != nil {
			return nil, fmt.Errorf("%w: SetReadDeadline: %v", ErrNotStoppable, err)
		}
		in.dl = d
		return in, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrNotStoppable, r)
}

// Read reads the source; after Stop it returns os.ErrClosed.
func (in *Input) Read(p []byte) (int, error) {
	select {
	case <-in.stopped:
		return 0, os.ErrClosed
	default:
	}
	return in.r.Read(p)
}

// Stop unblocks a Read in progress and fails later ones. It may be called
// more than once and concurrently with Read.
func (in *Input) Stop() {
	in.once.Do(func() {
		close(in.stopped)
		if in.private != nil {
			_ = in.private.Close()
		}
		if in.dl != nil {
			_ = in.dl.SetReadDeadline(time.Unix(1, 0))
		}
	})
}

// Release gives a deadline reader back to its owner with no deadline; call
// it after Stop, once no Read is in progress.
func (in *Input) Release() {
	if in.dl != nil {
		_ = in.dl.SetReadDeadline(time.Time{})
	}
}

// CheckInput reports, without side effects, a reader NewInput would refuse
// for its type (one that is neither an *os.File, nor in-memory, nor has
// SetReadDeadline). NewInput may still refuse a reader whose
// SetReadDeadline does not work.
func CheckInput(r io.Reader) error {
	switch r.(type) {
	case *os.File, *strings.Reader, *bytes.Reader, *bytes.Buffer:
		return nil
	case interface{ SetReadDeadline(time.Time) error }:
		return nil
	}
	return fmt.Errorf("%w: %T", ErrNotStoppable, r)
}
