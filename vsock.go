package corral

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/corral-vmm/corral/virtio/vsock"
)

// Vsock is a virtio-vsock device served in user space (virtio/vsock): the
// guest's AF_VSOCK connections to the host (CID 2) end in this process, so
// no vhost-vsock module is needed and each machine has a CID space of its
// own. Reach the guest from Go with Machine.DialVsock and ListenVsock;
// other programs use UDSPath.
type Vsock struct {
	// CID is the guest's context ID; 0 means 3. At least 3 and below
	// 0xffffffff.
	CID uint64
	// UDSPath, when set, is a Unix socket for other programs, speaking
	// Firecracker's hybrid vsock: connect and write "CONNECT <port>\n" to
	// reach a guest port (the answer is "OK <host port>\n"); a guest
	// connection to host port P that no ListenVsock covers goes to a Unix
	// socket at UDSPath_P. The file must not exist; it is removed when
	// the machine ends.
	UDSPath string
}

// ErrNoVsock is returned by DialVsock and ListenVsock on a machine
// configured without Config.Vsock.
var ErrNoVsock = errors.New("corral: the machine has no vsock device")

// maxUDSPath leaves room in sun_path (108 bytes with its NUL) for the
// "_4294967295" of a forwarded port.
const maxUDSPath = 107 - 11

// validate checks the vsock configuration without creating anything.
func (v *Vsock) validate() error {
	if v.CID != 0 && (v.CID <= vsock.HostCID || v.CID >= 0xffffffff) {
		return fmt.Errorf("guest CID %d: want 3..4294967294 (0, 1 and 2 are reserved, 2 is the host)", v.CID)
	}
	if v.UDSPath == "" {
		return nil
	}
	if len(v.UDSPath) > maxUDSPath {
		return fmt.Errorf("UDS path %q is %d bytes; at most %d fit a Unix socket address with a port suffix", v.UDSPath, len(v.UDSPath), maxUDSPath)
	}
	if _, err := os.Lstat(v.UDSPath); err == nil {
		return fmt.Errorf("UDS path %q already exists", v.UDSPath)
	}
	if st, err := os.Stat(filepath.Dir(v.UDSPath)); err != nil || !st.IsDir() {
		return fmt.Errorf("UDS path %q: its directory does not exist", v.UDSPath)
	}
	return nil
}

// createVsock builds the vsock device (listening on UDSPath at once) and
// puts it on the PCI bus after the NICs.
func (m *Machine) createVsock() error {
	v := m.cfg.Vsock
	if v == nil {
		return nil
	}
	dev, err := vsock.New(vsock.Config{CID: v.CID, UDSPath: v.UDSPath, Logger: m.log.With("device", "vsock")})
	if err != nil {
		return fmt.Errorf("corral: vsock: %w", err)
	}
	m.plat.vsock = dev
	if err := m.addVirtio("virtio-vsock", dev); err != nil {
		return err
	}
	m.log.Info("vm.vsock", "id", m.id, "cid", dev.CID(), "uds", v.UDSPath)
	return nil
}

// DialVsock connects to port on the guest, in process (no socket file).
// It fails with vsock.ErrNotRunning until the guest's driver is up,
// vsock.ErrRefused when nothing listens on port, and ErrNoVsock without
// Config.Vsock. The connection ends with the machine.
func (m *Machine) DialVsock(ctx context.Context, port uint32) (net.Conn, error) {
	if m.plat == nil || m.plat.vsock == nil {
		return nil, ErrNoVsock
	}
	c, err := m.plat.vsock.Dial(ctx, port)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ListenVsock accepts guest connections to host port, in process. It takes
// precedence over UDSPath forwarding for that port. The listener closes
// when the machine ends.
func (m *Machine) ListenVsock(port uint32) (net.Listener, error) {
	if m.plat == nil || m.plat.vsock == nil {
		return nil, ErrNoVsock
	}
	l, err := m.plat.vsock.Listen(port)
	if err != nil {
		return nil, err
	}
	return l, nil
}
