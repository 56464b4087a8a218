//go:build linux && amd64

package sandbox

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ErrNoLandlock is returned when the kernel lacks Landlock (not built in,
// or not in the lsm= list).
var ErrNoLandlock = errors.New("sandbox: Landlock is not available in this kernel")

// Landlock access rights by the ABI version that introduced them.
const (
	fsFileRights = unix.LANDLOCK_ACCESS_FS_EXECUTE | unix.LANDLOCK_ACCESS_FS_WRITE_FILE | unix.LANDLOCK_ACCESS_FS_READ_FILE
	fsRightsV1   = fsFileRights | unix.LANDLOCK_ACCESS_FS_READ_DIR | unix.LANDLOCK_ACCESS_FS_REMOVE_DIR |
		unix.LANDLOCK_ACCESS_FS_REMOVE_FILE | unix.LANDLOCK_ACCESS_FS_MAKE_CHAR | unix.LANDLOCK_ACCESS_FS_MAKE_DIR |
		unix.LANDLOCK_ACCESS_FS_MAKE_REG | unix.LANDLOCK_ACCESS_FS_MAKE_SOCK | unix.LANDLOCK_ACCESS_FS_MAKE_FIFO |
		unix.LANDLOCK_ACCESS_FS_MAKE_BLOCK | unix.LANDLOCK_ACCESS_FS_MAKE_SYM
	fsReferV2    = unix.LANDLOCK_ACCESS_FS_REFER
	fsTruncateV3 = unix.LANDLOCK_ACCESS_FS_TRUNCATE
	fsIoctlDevV5 = unix.LANDLOCK_ACCESS_FS_IOCTL_DEV
	netTCPV4     = unix.LANDLOCK_ACCESS_NET_BIND_TCP | unix.LANDLOCK_ACCESS_NET_CONNECT_TCP
	scopeV6      = unix.LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | unix.LANDLOCK_SCOPE_SIGNAL
)

// landlockRights returns what a ruleset handles at ABI version abi: every
// file-system right the kernel knows, TCP bind and connect (ABI 4; no rule
// grants them, so the VMM can open no TCP connection), and the abstract
// socket and signal scopes (ABI 6).
func landlockRights(abi int) (fs, net, scope uint64) {
	fs = fsRightsV1
	if abi >= 2 {
		fs |= fsReferV2
	}
	if abi >= 3 {
		fs |= fsTruncateV3
	}
	if abi >= 5 {
		fs |= fsIoctlDevV5
	}
	if abi >= 4 {
		net = netTCPV4
	}
	if abi >= 6 {
		scope = scopeV6
	}
	return fs, net, scope
}

// pathRights returns the rights a rule grants beneath path: reading, or
// reading and changing anything (but never executing). A rule on a file
// may hold only the rights that apply to files.
func pathRights(handled uint64, write, isDir bool) uint64 {
	r := uint64(unix.LANDLOCK_ACCESS_FS_READ_FILE | unix.LANDLOCK_ACCESS_FS_READ_DIR)
	if write {
		r = handled &^ unix.LANDLOCK_ACCESS_FS_EXECUTE
	}
	if !isDir {
		r &= fsFileRights | fsTruncateV3 | fsIoctlDevV5
	}
	return r & handled
}

// landlockABI returns the kernel's Landlock ABI version.
func landlockABI() (int, error) {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e == unix.ENOSYS || e == unix.EOPNOTSUPP {
		return 0, ErrNoLandlock
	}
	if e != 0 {
		return 0, fmt.Errorf("sandbox: landlock_create_ruleset version: %w", e)
	}
	return int(v), nil
}

// applyLandlock restricts every thread to read, and write paths; a path
// that does not exist is an error (the caller names only what it opened or
// will create beneath). It returns the ABI version used.
func applyLandlock(read, write []string) (int, error) {
	abi, err := landlockABI()
	if err != nil {
		return 0, err
	}
	fs, net, scope := landlockRights(abi)
	rs, err := createRuleset(fs, net, scope, abi)
	if err != nil {
		return abi, err
	}
	defer unix.Close(rs)
	// Raw calls: os.Stat and os.OpenFile would resolve each path twice
	// and try to add the O_PATH descriptor to the poller.
	add := func(p string, write bool) error {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("sandbox: landlock rule: open %s: %w", p, err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fmt.Errorf("sandbox: landlock rule: stat %s: %w", p, err)
		}
		return addPathRule(rs, fd, pathRights(fs, write, st.Mode&unix.S_IFMT == unix.S_IFDIR), p)
	}
	for _, p := range read {
		if err := add(p, false); err != nil {
			return abi, err
		}
	}
	for _, p := range write {
		if err := add(p, true); err != nil {
			return abi, err
		}
	}
	err = allThreads("landlock_restrict_self", unix.SYS_LANDLOCK_RESTRICT_SELF, uintptr(rs), 0, 0)
	if errors.Is(err, unix.EPERM) {
		// The calling thread failed first, so no thread is restricted.
		return abi, fmt.Errorf("%w: %w", errLandlockNeedsNNP, unix.EPERM)
	}
	return abi, err
}

// errLandlockNeedsNNP is applyLandlock's error when the threads have
// neither no_new_privs nor CAP_SYS_ADMIN; no thread was restricted.
var errLandlockNeedsNNP = errors.New("sandbox: landlock_restrict_self needs no_new_privs or CAP_SYS_ADMIN")
