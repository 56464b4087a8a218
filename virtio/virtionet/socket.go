package virtionet

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// NewSocketBackend returns a backend on one end of a SOCK_SEQPACKET or
// SOCK_DGRAM socket (a socket pair, say) that carries one Ethernet frame,
// without a virtio-net header, per message: a NIC that needs neither root
// nor a TAP. It works on a non-blocking close-on-exec duplicate of f's
// descriptor and closes f on success; on error f is left as it was.
func NewSocketBackend(f *os.File) (*FileBackend, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("virtio-net: backend %s: %w", f.Name(), err)
	}
	var typ int
	var serr error
	if cerr := rc.Control(func(fd uintptr) { typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE) }); cerr != nil {
		serr = cerr
	}
	switch {
	case serr != nil:
		return nil, fmt.Errorf("virtio-net: backend %s is not a socket: %w", f.Name(), serr)
	case typ != unix.SOCK_SEQPACKET && typ != unix.SOCK_DGRAM:
		return nil, fmt.Errorf("virtio-net: backend %s is a socket of type %d, not SOCK_SEQPACKET or SOCK_DGRAM (a stream has no frame boundaries)", f.Name(), typ)
	}
	return NewFileBackend(f, false)
}

// dupNonblock returns a close-on-exec duplicate of f's descriptor in
// non-blocking mode.
func dupNonblock(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, fmt.Errorf("virtio-net: backend %s: %w", f.Name(), err)
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		if nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0); derr == nil {
			derr = unix.SetNonblock(nfd, true)
		}
	}); err != nil {
		return -1, fmt.Errorf("virtio-net: backend %s: %w", f.Name(), err)
	}
	if derr != nil {
		if nfd >= 0 {
			unix.Close(nfd)
		}
		return -1, fmt.Errorf("virtio-net: duplicate backend %s: %w", f.Name(), derr)
	}
	return nfd, nil
}
