//go:build linux && amd64

package sandbox

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// numSyscallNames is len(syscallNames), for the assembly handler's bound.
const numSyscallNames = len(syscallNames)

// sigsysHandler is the SIGSYS handler in sigsys_amd64.s. The kernel calls
// it; Go code never does.
func sigsysHandler()

// sigsysHandlerAddr returns sigsysHandler's ABI0 entry point.
func sigsysHandlerAddr() uintptr

// kernelSigaction is struct sigaction as rt_sigaction takes it on x86-64.
type kernelSigaction struct {
	handler  uintptr
	flags    uint64
	restorer uintptr
	mask     uint64
}

const (
	saSiginfo  = 0x4
	saOnstack  = 0x08000000
	saRestorer = 0x04000000
)

// installSIGSYSHandler makes a trapped system call print its name and end
// the process. The Go runtime does not use SIGSYS after this (nothing in
// Corral calls signal.Notify for it), so the handler stays. SA_ONSTACK puts
// it on the signal stack Go gives every thread, never a small goroutine
// stack; SA_RESTORER is mandatory on x86-64 though the handler never
// returns; every signal is blocked while it runs.
func installSIGSYSHandler() error {
	h := sigsysHandlerAddr()
	act := kernelSigaction{
		handler:  h,
		flags:    saSiginfo | saOnstack | saRestorer,
		restorer: h,
		mask:     ^uint64(0),
	}
	_, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGSYS), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
	if e != 0 {
		return fmt.Errorf("sandbox: rt_sigaction SIGSYS: %w", e)
	}
	return nil
}
