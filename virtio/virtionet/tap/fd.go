package tap

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

// FromFile adopts an already attached TAP descriptor, as Cloud Hypervisor's
// --net fd= and crosvm's --tap-fd do: whoever made the TAP (and gave it
// addresses or a bridge) keeps that setup, and the VMM needs no privilege.
// Frames carry a virtio-net header when the TAP was attached with
// IFF_VNET_HDR. A descriptor that is not a TAP is ErrNotTap. The Tap works
// on a non-blocking duplicate and closes f on success; on error f is left
// as it was. Close changes nothing on the device.
func FromFile(f *os.File, log *slog.Logger) (*Tap, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	what := f.Name()
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("tap: %s: %w", what, err)
	}
	t := &Tap{log: log, mtu: virtionet.DefaultMTU}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		var ifr *unix.Ifreq
		if ifr, ierr = unix.NewIfreq(""); ierr != nil {
			return
		}
		if ierr = unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr); ierr != nil {
			ierr = fmt.Errorf("%w: %s: TUNGETIFF: %v", ErrNotTap, what, ierr)
			return
		}
		flags := ifr.Uint16()
		if flags&unix.IFF_TAP == 0 || flags&unix.IFF_NO_PI == 0 {
			ierr = fmt.Errorf("%w: %s is a TUN device or carries packet information (flags %#x)", ErrNotTap, what, flags)
			return
		}
		t.name = ifr.Name()
		t.vnetHdr = flags&unix.IFF_VNET_HDR != 0
		if t.vnetHdr {
			if t.offloads, ierr = setVnetHdr(int(fd)); ierr != nil {
				return
			}
		}
	}); err != nil {
		return nil, fmt.Errorf("tap: %s: %w", what, err)
	}
	if ierr != nil {
		if errors.Is(ierr, ErrNotTap) {
			return nil, ierr
		}
		return nil, fmt.Errorf("%w (on %s)", ierr, t.name)
	}
	// MAC and MTU are read through netlink, which sees the device only
	// when it is in the calling thread's network namespace; otherwise MAC
	// returns nil and MTU the default.
	if link, err := netlink.LinkByName(t.name); err == nil {
		if _, ok := link.(*netlink.Tuntap); ok {
			t.index, t.mtu = link.Attrs().Index, link.Attrs().MTU
			t.mac = append(net.HardwareAddr(nil), link.Attrs().HardwareAddr...)
		}
	}
	// NewFileBackend makes the duplicate and closes f.
	if t.FileBackend, err = virtionet.NewFileBackend(f, t.vnetHdr); err != nil {
		return nil, err
	}
	log.Info("tap: adopted TAP descriptor", "name", t.name, "vnet_hdr", t.vnetHdr, "offloads", fmt.Sprintf("%#x", t.offloads))
	return t, nil
}
