package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// APIVersion is the only KVM API version there has ever been.
const APIVersion = 12

// Sentinel errors callers branch on.
var (
	// ErrUnavailable means /dev/kvm cannot be opened (absent or no permission).
	ErrUnavailable = errors.New("kvm: /dev/kvm is not available")
	// ErrMissingCapability means the host KVM lacks a capability Corral needs.
	ErrMissingCapability = errors.New("kvm: host KVM lacks a required capability")
)

// DevicePath is the KVM device node.
const DevicePath = "/dev/kvm"

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int
}

// Open opens the KVM device at path (DevicePath when empty), checks the API
// version and every capability in RequiredCaps().
func Open(path string) (*System, error) {
	if path == "" {
		path = DevicePath
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: open %s: %w", ErrUnavailable, path, err)
	}
	s := &System{fd: fd}
	if err := s.check(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return s, nil
}

func (s *System) check() error {
	v, err := ioctl(s.fd, kvmGetAPIVersion, 0)
	if err != nil {
		return errIoctl(kvmGetAPIVersion, err)
	}
	if v != APIVersion {
		return fmt.Errorf("kvm: KVM_GET_API_VERSION returned %d, want %d", v, APIVersion)
	}
	for _, c := range RequiredCaps() {
		n, err := s.CheckExtension(c)
		if err != nil {
			return err
		}
		if n <= 0 {
			return fmt.Errorf("%w: %s", ErrMissingCapability, c)
		}
	}
	sz, err := ioctl(s.fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return errIoctl(kvmGetVCPUMmapSize, err)
	}
	if sz < 4096 {
		return fmt.Errorf("kvm: KVM_GET_VCPU_MMAP_SIZE returned %d, too small for struct kvm_run", sz)
	}
	s.mmapSize = int(sz)
	return nil
}

// Close closes /dev/kvm. VMs created from it stay valid.
func (s *System) Close() error { return unix.Close(s.fd) }

// CheckExtension returns KVM_CHECK_EXTENSION's answer for c: 0 when absent,
// otherwise 1 or a capability-specific number.
func (s *System) CheckExtension(c Cap) (int, error) {
	return checkExtension(s.fd, c)
}

func checkExtension(fd int, c Cap) (int, error) {
	n, err := ioctl(fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("kvm: KVM_CHECK_EXTENSION %s: %w", c, err)
	}
	return int(n), nil
}

// SupportedCPUID returns the CPUID leaves KVM can expose to a guest.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	for n := 64; n <= 4096; n *= 2 {
		buf := make([]byte, cpuidHeaderSize+n*cpuidEntrySize)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		if _, err := ioctlBuf(s.fd, kvmGetSupportedCPUID, buf); err != nil {
			if errors.Is(err, unix.E2BIG) {
				continue
			}
			return nil, errIoctl(kvmGetSupportedCPUID, err)
		}
		return decodeCPUID(buf), nil
	}
	return nil, fmt.Errorf("kvm: KVM_GET_SUPPORTED_CPUID: more than 4096 entries")
}

// MSRIndexList returns the MSRs KVM can save and restore for a guest
// (KVM_GET_MSR_INDEX_LIST). Only these may be set.
func (s *System) MSRIndexList() ([]uint32, error) {
	for n := 256; n <= 1<<16; n *= 2 {
		buf := make([]byte, 4+4*n)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		if _, err := ioctlBuf(s.fd, kvmGetMSRIndexList, buf); err != nil {
			if errors.Is(err, unix.E2BIG) {
				continue
			}
			return nil, errIoctl(kvmGetMSRIndexList, err)
		}
		got := int(binary.LittleEndian.Uint32(buf))
		if got > n {
			return nil, fmt.Errorf("kvm: KVM_GET_MSR_INDEX_LIST returned %d entries for a buffer of %d", got, n)
		}
		list := make([]uint32, got)
		for i := range list {
			list[i] = binary.LittleEndian.Uint32(buf[4+4*i:])
		}
		return list, nil
	}
	return nil, fmt.Errorf("kvm: KVM_GET_MSR_INDEX_LIST: too many entries")
}

// CreateVM creates a virtual machine with no memory and no vCPUs.
func (s *System) CreateVM() (*VM, error) {
	// KVM_CREATE_VM fails with EINTR when a signal is pending while it
	// registers its MMU notifier (mm_take_all_locks), and Go's runtime
	// signals threads to preempt goroutines: retry, as QEMU does (seen in
	// 2 of 5 runs of 200 creations in tests/tcgkvm).
	fd, err := retryEINTR(func() (uintptr, error) { return ioctl(s.fd, kvmCreateVM, 0) })
	if err != nil {
		return nil, errIoctl(kvmCreateVM, err)
	}
	unix.CloseOnExec(int(fd))
	return &VM{fd: int(fd), mmapSize: s.mmapSize}, nil
}

func decodeCPUID(buf []byte) []CPUIDEntry {
	n := int(binary.LittleEndian.Uint32(buf))
	if max := (len(buf) - cpuidHeaderSize) / cpuidEntrySize; n > max {
		n = max
	}
	out := make([]CPUIDEntry, n)
	for i := range out {
		e := buf[cpuidHeaderSize+i*cpuidEntrySize:]
		out[i] = CPUIDEntry{
			Function: binary.LittleEndian.Uint32(e[0:]),
			Index:    binary.LittleEndian.Uint32(e[4:]),
			Flags:    binary.LittleEndian.Uint32(e[8:]),
			EAX:      binary.LittleEndian.Uint32(e[12:]),
			EBX:      binary.LittleEndian.Uint32(e[16:]),
			ECX:      binary.LittleEndian.Uint32(e[20:]),
			EDX:      binary.LittleEndian.Uint32(e[24:]),
		}
	}
	return out
}

func encodeCPUID(entries []CPUIDEntry) []byte {
	buf := make([]byte, cpuidHeaderSize+len(entries)*cpuidEntrySize)
	binary.LittleEndian.PutUint32(buf, uint32(len(entries)))
	for i, c := range entries {
		e := buf[cpuidHeaderSize+i*cpuidEntrySize:]
		binary.LittleEndian.PutUint32(e[0:], c.Function)
		binary.LittleEndian.PutUint32(e[4:], c.Index)
		binary.LittleEndian.PutUint32(e[8:], c.Flags)
		binary.LittleEndian.PutUint32(e[12:], c.EAX)
		binary.LittleEndian.PutUint32(e[16:], c.EBX)
		binary.LittleEndian.PutUint32(e[20:], c.ECX)
		binary.LittleEndian.PutUint32(e[24:], c.EDX)
	}
	return buf
}
