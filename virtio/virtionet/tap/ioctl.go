package tap

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

// TUNSETOFFLOAD flags (linux/if_tun.h); golang.org/x/sys does not name them.
const (
	tunFCsum   = 0x01 // TUN_F_CSUM: the reader takes partial checksums
	tunFTSO4   = 0x02 // TUN_F_TSO4
	tunFTSO6   = 0x04 // TUN_F_TSO6
	tunFTSOECN = 0x08 // TUN_F_TSO_ECN
)

// vnetHdrLen is the virtio-net header with num_buffers (VERSION_1).
const vnetHdrLen = virtionet.HeaderLen

func tunFlags(o virtionet.Offload) int {
	f := 0
	if o&virtionet.OffloadCsum != 0 {
		f |= tunFCsum
	}
	if o&virtionet.OffloadTSO4 != 0 {
		f |= tunFTSO4
	}
	if o&virtionet.OffloadTSO6 != 0 {
		f |= tunFTSO6
	}
	if o&virtionet.OffloadTSOECN != 0 {
		f |= tunFTSOECN
	}
	return f
}

// setIff binds fd to the TAP called name (TUNSETIFF), creating it when
// create is set (with IFF_TUN_EXCL, so an existing device is an error, not
// silently shared), as one queue of a multi-queue TAP when multi is set.
// It returns the device's name as the kernel has it.
func setIff(fd int, name string, vnetHdr, create, multi bool) (string, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return "", fmt.Errorf("tap: interface name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnetHdr {
		flags |= unix.IFF_VNET_HDR
	}
	if create {
		flags |= unix.IFF_TUN_EXCL
	}
	if multi {
		flags |= unix.IFF_MULTI_QUEUE
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		verb := "attach to"
		if create {
			verb = "create"
		}
		switch {
		case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
			return "", fmt.Errorf("%w: TUNSETIFF to %s TAP %q: %v (needs CAP_NET_ADMIN, or for an existing TAP its owner's uid or group)", ErrNoPrivilege, verb, name, err)
		case errors.Is(err, unix.EBUSY) && create:
			return "", fmt.Errorf("%w: TUNSETIFF to create TAP %q: %v", ErrExists, name, err)
		case errors.Is(err, unix.EBUSY):
			return "", fmt.Errorf("%w: TAP %q is attached to another process: %v", ErrInUse, name, err)
		case errors.Is(err, unix.EINVAL) && !create:
			return "", fmt.Errorf("%w: TUNSETIFF to attach to %q: %v (a TUN device, or a TAP whose queue mode changed?)", ErrNotTap, name, err)
		}
		return "", fmt.Errorf("tap: TUNSETIFF to %s TAP %q: %w", verb, name, err)
	}
	return ifr.Name(), nil
}

// setQueue attaches fd's queue to its multi-queue TAP or detaches it
// (TUNSETQUEUE): a detached queue gets no frames and takes none.
func setQueue(fd int, on bool) error {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return err
	}
	flags := uint16(unix.IFF_DETACH_QUEUE)
	if on {
		flags = unix.IFF_ATTACH_QUEUE
	}
	ifr.SetUint16(flags)
	return unix.IoctlIfreq(fd, unix.TUNSETQUEUE, ifr)
}

// setVnetHdr makes every frame carry a 12-byte virtio_net_hdr_v1
// (TUNSETVNETHDRSZ) and probes which offloads TUNSETOFFLOAD accepts, leaving
// them all off until the guest says what it takes. The header is in host
// byte order, which is the virtio 1 order (little-endian) on the hosts
// Corral runs on (x86-64).
func setVnetHdr(fd int) (virtionet.Offload, error) {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		return 0, fmt.Errorf("tap: TUNSETVNETHDRSZ %d: %w", vnetHdrLen, err)
	}
	var supported virtionet.Offload
	for _, o := range []virtionet.Offload{
		virtionet.OffloadCsum | virtionet.OffloadTSO4 | virtionet.OffloadTSO6 | virtionet.OffloadTSOECN,
		virtionet.OffloadCsum | virtionet.OffloadTSO4 | virtionet.OffloadTSO6,
		virtionet.OffloadCsum,
	} {
		if unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFlags(o)) == nil {
			supported = o
			break
		}
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		return 0, fmt.Errorf("tap: TUNSETOFFLOAD 0: %w", err)
	}
	return supported, nil
}
