package kvm

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl issues a request whose argument is an integer.
func ioctl(fd int, req uintptr, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return r, e
	}
	return r, nil
}

// ioctlPtr issues a request whose argument points at p, which stays
// reachable for the duration of the call.
func ioctlPtr(fd int, req uintptr, p unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(p))
	if e != 0 {
		return r, e
	}
	return r, nil
}

// ioctlBuf issues a request whose argument is a byte buffer laid out with
// encoding/binary.
func ioctlBuf(fd int, req uintptr, b []byte) (uintptr, error) {
	return ioctlPtr(fd, req, unsafe.Pointer(&b[0]))
}

func ioctlRegs(fd int, req uintptr, r *Regs) error {
	_, err := ioctlPtr(fd, req, unsafe.Pointer(r))
	return err
}

func ioctlSregs(fd int, req uintptr, s *Sregs) error {
	_, err := ioctlPtr(fd, req, unsafe.Pointer(s))
	return err
}

func ioctlFPU(fd int, req uintptr, f *FPU) error {
	_, err := ioctlPtr(fd, req, unsafe.Pointer(f))
	return err
}

func ioctlLAPIC(fd int, req uintptr, l *LAPICState) error {
	_, err := ioctlPtr(fd, req, unsafe.Pointer(l))
	return err
}

// hostAddr returns the host virtual address of b's first byte, for
// KVM_SET_USER_MEMORY_REGION. b must be memory the GC does not move
// (mmap'd guest RAM).
func hostAddr(b []byte) uint64 { return uint64(uintptr(unsafe.Pointer(&b[0]))) }

// immediateExitWord is the 32-bit word of struct kvm_run holding
// request_interrupt_window (byte 0) and immediate_exit (byte 1).
func immediateExitWord(run []byte) *uint32 { return (*uint32)(unsafe.Pointer(&run[0])) }

// setImmediateExit sets or clears kvm_run.immediate_exit atomically, without
// disturbing the neighbouring bytes.
func setImmediateExit(run []byte, on bool) {
	if on {
		atomic.OrUint32(immediateExitWord(run), 1<<8)
	} else {
		atomic.AndUint32(immediateExitWord(run), ^uint32(0xff<<8))
	}
}
