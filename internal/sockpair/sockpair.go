// Package sockpair makes connected Unix stream socket pairs as net.Conns,
// for tests that stand in for a vsock connection: unlike net.Pipe they
// buffer, as vsock does, so a writer can pipeline frames the reader has
// not asked for yet.
package sockpair

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// New returns the two ends of a connected Unix stream socket pair.
func New() (net.Conn, net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("sockpair: %w", err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // dups fd
		f.Close()
		if err != nil {
			if i == 1 {
				conns[0].Close()
			} else {
				unix.Close(fds[1])
			}
			return nil, nil, fmt.Errorf("sockpair: %w", err)
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}
