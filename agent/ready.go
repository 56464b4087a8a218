package agent

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ReadyPort is the host's vsock port PID 1 connects to once it listens,
// closing the connection at once: a host that listens there (agentvm)
// greets the agent then, rather than polling a guest that is still
// booting, where every refused poll is a packet the guest's kernel must
// take and answer. A host that does not listen refuses, and nothing else
// changes.
const ReadyPort = 1025

// AnnounceReady connects to the host's ReadyPort and closes the
// connection. It blocks until the host answers (the kernel bounds the
// connect, 2 s by default); its error, a host that does not listen, is
// for logs only.
func AnnounceReady() error {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("agent: announcing readiness: vsock socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_HOST, Port: ReadyPort}); err != nil {
		return fmt.Errorf("agent: announcing readiness to host port %d: %w", ReadyPort, err)
	}
	return nil
}
