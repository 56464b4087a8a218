//go:build linux && amd64

package sandbox

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// installFilter loads prog on every thread of the process (TSYNC), with
// SECCOMP_FILTER_FLAG_LOG so denials reach the audit log. no_new_privs must
// be set already; the kernel copies it to the threads it synchronizes.
func installFilter(prog []bpf.RawInstruction) error {
	filt := make([]unix.SockFilter, len(prog))
	for i, in := range prog {
		filt[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filt)), Filter: &filt[0]}
	r, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC|unix.SECCOMP_FILTER_FLAG_LOG, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filt)
	if e != 0 {
		return fmt.Errorf("sandbox: seccomp SET_MODE_FILTER: %w", e)
	}
	if r != 0 {
		return fmt.Errorf("sandbox: seccomp TSYNC: thread %d could not be synchronized", r)
	}
	return nil
}
