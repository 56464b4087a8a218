package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPort is the vsock port the agent listens on unless told otherwise.
const DefaultPort = 1024

// Listen opens the listener spec names: "vsock:PORT" (any local CID),
// "unix:PATH" or "tcp:ADDR".
func Listen(spec string) (net.Listener, error) {
	kind, arg, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, fmt.Errorf("agent: listen address %q, want vsock:PORT, unix:PATH or tcp:ADDR", spec)
	}
	switch kind {
	case "vsock":
		port, err := strconv.ParseUint(arg, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("agent: vsock port %q: %w", arg, err)
		}
		return ListenVsock(uint32(port))
	case "unix", "tcp":
		l, err := net.Listen(kind, arg)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		return l, nil
	}
	return nil, fmt.Errorf("agent: listen address %q: unknown kind %q, want vsock, unix or tcp", spec, kind)
}

// vsockOptions are the kernel options a guest agent needs for vsock.
const vsockOptions = "CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS"

// ErrNoVsockTransport means the kernel has vsock sockets but no transport
// to a host: no virtio-vsock driver, or no virtio-vsock device.
var ErrNoVsockTransport = errors.New("no vsock transport to the host")

// CheckVsockTransport asks /dev/vsock for the local CID, which is a guest
// CID (3 or more) only once a virtio-vsock device is there; without one
// Linux 6.1 says VMADDR_CID_LOCAL (the loopback transport) or
// VMADDR_CID_ANY, and an agent would listen and never hear from the host.
// Only a guest should ask.
func CheckVsockTransport() error {
	return checkVsockTransport("/dev/vsock")
}

func checkVsockTransport(dev string) error {
	f, err := os.Open(dev)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("agent: vsock: %w: no %s (kernel needs %s)", ErrNoVsockTransport, dev, vsockOptions)
	}
	if err != nil {
		return fmt.Errorf("agent: vsock: %w", err)
	}
	defer f.Close()
	cid, err := unix.IoctlGetUint32(int(f.Fd()), unix.IOCTL_VM_SOCKETS_GET_LOCAL_CID)
	if err != nil {
		return fmt.Errorf("agent: vsock: IOCTL_VM_SOCKETS_GET_LOCAL_CID on %s: %w", dev, err)
	}
	return localCIDErr(cid)
}

// localCIDErr judges the local CID /dev/vsock reported.
func localCIDErr(cid uint32) error {
	if cid == unix.VMADDR_CID_ANY || cid <= unix.VMADDR_CID_HOST {
		return fmt.Errorf("agent: vsock: %w: local CID %d (kernel needs CONFIG_VIRTIO_VSOCKETS, and the machine a virtio-vsock device)", ErrNoVsockTransport, int32(cid))
	}
	return nil
}

// VsockAddr is a vsock address.
type VsockAddr struct {
	CID, Port uint32
}

// Network returns "vsock".
func (a VsockAddr) Network() string { return "vsock" }

func (a VsockAddr) String() string { return fmt.Sprintf("vsock:%d:%d", a.CID, a.Port) }

// vsockListener accepts vsock connections through Go's poller.
// net.FileListener cannot be used: the net package does not know AF_VSOCK
// addresses and refuses such sockets.
type vsockListener struct {
	f    *os.File
	addr VsockAddr
}

// ListenVsock listens on port of every local CID.
func ListenVsock(port uint32) (net.Listener, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err == unix.EAFNOSUPPORT {
		return nil, fmt.Errorf("agent: vsock socket: %w (kernel needs %s)", err, vsockOptions)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: vsock socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("agent: binding vsock port %d: %w", port, err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("agent: listening on vsock port %d: %w", port, err)
	}
	addr := VsockAddr{CID: unix.VMADDR_CID_ANY, Port: port}
	if sa, err := unix.Getsockname(fd); err == nil {
		if vm, ok := sa.(*unix.SockaddrVM); ok {
			addr = VsockAddr{CID: vm.CID, Port: vm.Port}
		}
	}
	return &vsockListener{f: os.NewFile(uintptr(fd), "vsock-listener"), addr: addr}, nil
}

func (l *vsockListener) Accept() (net.Conn, error) {
	rc, err := l.f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("agent: vsock accept: %w", err)
	}
	var nfd int
	var sa unix.Sockaddr
	var aerr error
	err = rc.Read(func(fd uintptr) bool {
		var again bool
		nfd, sa, aerr, again = acceptOnce(func() (int, unix.Sockaddr, error) {
			return unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		})
		return !again
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, fmt.Errorf("agent: vsock accept: %w", aerr)
	}
	c := &vsockConn{File: os.NewFile(uintptr(nfd), "vsock"), local: l.addr}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		c.remote = VsockAddr{CID: vm.CID, Port: vm.Port}
	}
	return c, nil
}

func (l *vsockListener) Close() error   { return l.f.Close() }
func (l *vsockListener) Addr() net.Addr { return l.addr }

// vsockConn is an accepted vsock connection; *os.File gives it reads,
// writes and deadlines through the poller.
type vsockConn struct {
	*os.File
	local, remote VsockAddr
}

func (c *vsockConn) LocalAddr() net.Addr  { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline and friends come from *os.File; these keep the method set
// of net.Conn explicit.
func (c *vsockConn) SetDeadline(t time.Time) error      { return c.File.SetDeadline(t) }
func (c *vsockConn) SetReadDeadline(t time.Time) error  { return c.File.SetReadDeadline(t) }
func (c *vsockConn) SetWriteDeadline(t time.Time) error { return c.File.SetWriteDeadline(t) }

// acceptOnce calls accept until it gives a connection, an error, or
// EAGAIN (again: wait for the socket to be readable). EINTR is retried:
// vsock's accept returns it, not EAGAIN, to a non-blocking caller with a
// signal pending, and the agent as PID 1 gets SIGCHLD (and Go's
// preemption signals) all the time; one such EINTR used to end the
// agent's server. ECONNABORTED (a peer gone before it was accepted) is
// retried too, as Go's net package does.
func acceptOnce(accept func() (int, unix.Sockaddr, error)) (nfd int, sa unix.Sockaddr, err error, again bool) {
	for {
		nfd, sa, err = accept()
		switch err {
		case unix.EINTR, unix.ECONNABORTED:
			continue
		case unix.EAGAIN:
			return -1, nil, nil, true
		}
		return nfd, sa, err, false
	}
}
