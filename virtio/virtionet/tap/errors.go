package tap

import "errors"

// Errors callers branch on. Each is wrapped with what was being done.
var (
	// ErrNoPrivilege: the process lacks CAP_NET_ADMIN (or the TAP's owner
	// uid/group) for something Open had to do.
	ErrNoPrivilege = errors.New("tap: missing privilege: run as root or grant CAP_NET_ADMIN")
	// ErrNoTunDevice: /dev/net/tun is absent (the tun module is not loaded,
	// or the device node is not in this container).
	ErrNoTunDevice = errors.New("tap: /dev/net/tun is missing: load the tun module (modprobe tun) or expose the device")
	// ErrInUse: an existing single-queue TAP is already attached to another
	// process.
	ErrInUse = errors.New("tap: TAP device in use")
	// ErrExists: a TAP to create appeared under the same name meanwhile.
	ErrExists = errors.New("tap: interface exists")
	// ErrNotTap: the named interface exists but is not a TAP.
	ErrNotTap = errors.New("tap: not a TAP device")
	// ErrSingleQueue: more than one queue was asked of an existing TAP
	// made without IFF_MULTI_QUEUE, which takes only one.
	ErrSingleQueue = errors.New("tap: existing TAP is single-queue")
	// ErrSubnetInUse: the host address overlaps an address on another
	// interface, so adding it would take over part of an existing network.
	ErrSubnetInUse = errors.New("tap: subnet already in use on the host")
)
