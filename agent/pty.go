package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// openPTY opens a new pseudo-terminal pair of rows x cols (0 leaves the
// kernel's default). The master is non-blocking under Go's poller, so
// closing it unblocks a pending Read.
func openPTY(rows, cols uint16) (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, errNotPTY
		}
		return nil, nil, fmt.Errorf("agent: opening /dev/ptmx: %w", err)
	}
	rc, err := master.SyscallConn()
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("agent: /dev/ptmx: %w", err)
	}
	var n int
	var ioErr error
	rc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr != nil {
			ioErr = fmt.Errorf("agent: unlocking the pseudo-terminal (TIOCSPTLCK): %w", ioErr)
			return
		}
		if n, ioErr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN); ioErr != nil {
			ioErr = fmt.Errorf("agent: pseudo-terminal number (TIOCGPTN): %w", ioErr)
		}
	})
	if ioErr != nil {
		master.Close()
		return nil, nil, ioErr
	}
	name := fmt.Sprintf("/dev/pts/%d", n)
	slave, err = os.OpenFile(name, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("agent: opening %s: %w", name, err)
	}
	if rows != 0 || cols != 0 {
		if err := setWinsize(master, rows, cols); err != nil {
			master.Close()
			slave.Close()
			return nil, nil, err
		}
	}
	return master, slave, nil
}

// setWinsize sets the terminal size; the kernel sends SIGWINCH to the
// terminal's foreground process group.
func setWinsize(master *os.File, rows, cols uint16) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return fmt.Errorf("agent: resizing the terminal: %w", err)
	}
	var ioErr error
	if err := rc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return fmt.Errorf("agent: resizing the terminal: %w", err)
	}
	if ioErr != nil {
		return fmt.Errorf("agent: resizing the terminal (TIOCSWINSZ): %w", ioErr)
	}
	return nil
}
