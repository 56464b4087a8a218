package blk

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// preadv and pwritev take the caller's iovec array, so requests with many
// segments do not allocate one per call (unix.Preadv builds its own).

func preadv(fd int, iov []unix.Iovec, off int64) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_PREADV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), uintptr(off), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

func pwritev(fd int, iov []unix.Iovec, off int64) (int, error) {
	n, _, e := unix.Syscall6(unix.SYS_PWRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), uintptr(off), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// addrOf returns the host address of b's first byte (b must not be
// empty): O_DIRECT needs buffers aligned in memory too.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
