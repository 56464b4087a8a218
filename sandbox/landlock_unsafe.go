//go:build linux && amd64

package sandbox

import (
	"encoding/binary"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rulesetAttr is struct landlock_ruleset_attr (ABI 6 layout; older
// kernels take the prefix given by its size).
type rulesetAttr struct {
	handledFS, handledNet, scoped uint64
}

// createRuleset makes a ruleset handling fs, net and scope rights, sized
// for what abi understands.
func createRuleset(fs, net, scope uint64, abi int) (int, error) {
	attr := rulesetAttr{handledFS: fs, handledNet: net, scoped: scope}
	size := unsafe.Sizeof(attr)
	switch {
	case abi < 4:
		size = 8
	case abi < 6:
		size = 16
	}
	fd, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, uintptr(unsafe.Pointer(&attr)), size, 0)
	runtime.KeepAlive(&attr)
	if e != 0 {
		return -1, fmt.Errorf("sandbox: landlock_create_ruleset: %w", e)
	}
	return int(fd), nil
}

// struct landlock_path_beneath_attr, which the kernel declares packed.
const (
	pbAllowedAccess = 0 // __u64 allowed_access
	pbParentFD      = 8 // __s32 parent_fd
	pbSize          = 12
)

// addPathRule grants access beneath the file open at fd.
func addPathRule(ruleset, fd int, access uint64, path string) error {
	var a [pbSize]byte
	binary.NativeEndian.PutUint64(a[pbAllowedAccess:], access)
	binary.NativeEndian.PutUint32(a[pbParentFD:], uint32(int32(fd)))
	_, _, e := unix.Syscall6(unix.SYS_LANDLOCK_ADD_RULE, uintptr(ruleset), unix.LANDLOCK_RULE_PATH_BENEATH, uintptr(unsafe.Pointer(&a)), 0, 0, 0)
	runtime.KeepAlive(&a)
	if e != 0 {
		return fmt.Errorf("sandbox: landlock_add_rule %s: %w", path, e)
	}
	return nil
}
