package agent

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestAcceptOnce: EINTR (vsock's answer to a non-blocking accept with a
// signal pending) and ECONNABORTED are retried, EAGAIN waits, other errors
// and connections return.
func TestAcceptOnce(t *testing.T) {
	script := func(errs ...error) func() (int, unix.Sockaddr, error) {
		return func() (int, unix.Sockaddr, error) {
			err := errs[0]
			errs = errs[1:]
			if err != nil {
				return -1, nil, err
			}
			return 7, &unix.SockaddrVM{CID: 2, Port: 9}, nil
		}
	}
	nfd, sa, err, again := acceptOnce(script(unix.EINTR, unix.ECONNABORTED, unix.EINTR, nil))
	if nfd != 7 || err != nil || again || sa.(*unix.SockaddrVM).Port != 9 {
		t.Errorf("after EINTR, ECONNABORTED, EINTR: fd %d sa %v err %v again %v, want fd 7, no error", nfd, sa, err, again)
	}
	if _, _, err, again := acceptOnce(script(unix.EINTR, unix.EAGAIN)); err != nil || !again {
		t.Errorf("EAGAIN: err %v again %v, want again", err, again)
	}
	if _, _, err, again := acceptOnce(script(unix.EMFILE)); !errors.Is(err, unix.EMFILE) || again {
		t.Errorf("EMFILE: err %v again %v, want EMFILE", err, again)
	}
}
