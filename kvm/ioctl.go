// Package kvm is a typed wrapper over the Linux KVM API (/dev/kvm) for
// x86-64 hosts, built on golang.org/x/sys/unix without cgo. Every error names
// the ioctl that failed.
//
// The three kinds of file descriptor in the API map to three types: System
// (/dev/kvm), VM and VCPU. Structures crossing the ioctl boundary are Go
// structs whose layout matches <linux/kvm.h> and <asm/kvm.h>; abi_unsafe_test.go
// checks the layouts and request numbers against the C headers when gcc and
// the headers are present.
package kvm

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

const kvmio = 0xAE

const (
	iocWrite = 1
	iocRead  = 2
)

// Request numbers of the ioctls this package issues (_IO, _IOR, _IOW and
// _IOWR of <asm-generic/ioctl.h> with type KVMIO).
const (
	kvmGetAPIVersion       = kvmio<<8 | 0x00
	kvmCreateVM            = kvmio<<8 | 0x01
	kvmGetMSRIndexList     = (iocRead|iocWrite)<<30 | 4<<16 | kvmio<<8 | 0x02
	kvmCheckExtension      = kvmio<<8 | 0x03
	kvmGetVCPUMmapSize     = kvmio<<8 | 0x04
	kvmGetSupportedCPUID   = (iocRead|iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x05
	kvmCreateVCPU          = kvmio<<8 | 0x41
	kvmSetUserMemoryRegion = (iocWrite)<<30 | 32<<16 | kvmio<<8 | 0x46
	kvmSetTSSAddr          = kvmio<<8 | 0x47
	kvmSetIdentityMapAddr  = (iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x48
	kvmCreateIRQChip       = kvmio<<8 | 0x60
	kvmIRQLine             = (iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x61
	kvmSetGSIRouting       = (iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x6a
	kvmIRQFD               = (iocWrite)<<30 | 32<<16 | kvmio<<8 | 0x76
	kvmCreatePIT2          = (iocWrite)<<30 | 64<<16 | kvmio<<8 | 0x77
	kvmIOEventFD           = (iocWrite)<<30 | 64<<16 | kvmio<<8 | 0x79
	kvmSignalMSI           = (iocWrite)<<30 | 32<<16 | kvmio<<8 | 0xa5
	kvmRun                 = kvmio<<8 | 0x80
	kvmGetRegs             = (iocRead)<<30 | 144<<16 | kvmio<<8 | 0x81
	kvmSetRegs             = (iocWrite)<<30 | 144<<16 | kvmio<<8 | 0x82
	kvmGetSregs            = (iocRead)<<30 | 312<<16 | kvmio<<8 | 0x83
	kvmSetSregs            = (iocWrite)<<30 | 312<<16 | kvmio<<8 | 0x84
	kvmGetMSRs             = (iocRead|iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x88
	kvmSetMSRs             = (iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x89
	kvmSetFPU              = (iocWrite)<<30 | 416<<16 | kvmio<<8 | 0x8d
	kvmGetLAPIC            = (iocRead)<<30 | 1024<<16 | kvmio<<8 | 0x8e
	kvmSetLAPIC            = (iocWrite)<<30 | 1024<<16 | kvmio<<8 | 0x8f
	kvmSetCPUID2           = (iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x90
	kvmGetMPState          = (iocRead)<<30 | 4<<16 | kvmio<<8 | 0x98

	// Snapshot state (state.go, state_vm.go).
	kvmGetCPUID2     = (iocRead|iocWrite)<<30 | 8<<16 | kvmio<<8 | 0x91
	kvmSetMPState    = (iocWrite)<<30 | 4<<16 | kvmio<<8 | 0x99
	kvmGetVCPUEvents = (iocRead)<<30 | vcpuEventsSize<<16 | kvmio<<8 | 0x9f
	kvmSetVCPUEvents = (iocWrite)<<30 | vcpuEventsSize<<16 | kvmio<<8 | 0xa0
	kvmGetDebugRegs  = (iocRead)<<30 | debugRegsSize<<16 | kvmio<<8 | 0xa1
	kvmSetDebugRegs  = (iocWrite)<<30 | debugRegsSize<<16 | kvmio<<8 | 0xa2
	kvmSetTSCKHz     = kvmio<<8 | 0xa2
	kvmGetTSCKHz     = kvmio<<8 | 0xa3
	kvmGetXSAVE      = (iocRead)<<30 | xsaveLegacySize<<16 | kvmio<<8 | 0xa4
	kvmSetXSAVE      = (iocWrite)<<30 | xsaveLegacySize<<16 | kvmio<<8 | 0xa5
	kvmGetXCRs       = (iocRead)<<30 | xcrsSize<<16 | kvmio<<8 | 0xa6
	kvmSetXCRs       = (iocWrite)<<30 | xcrsSize<<16 | kvmio<<8 | 0xa7
	kvmGetXSAVE2     = (iocRead)<<30 | xsaveLegacySize<<16 | kvmio<<8 | 0xcf
	kvmGetIRQChip    = (iocRead|iocWrite)<<30 | irqchipSize<<16 | kvmio<<8 | 0x62
	kvmSetIRQChip    = (iocRead)<<30 | irqchipSize<<16 | kvmio<<8 | 0x63 // _IOR in <linux/kvm.h>, though it writes
	kvmSetClock      = (iocWrite)<<30 | clockDataSize<<16 | kvmio<<8 | 0x7b
	kvmGetClock      = (iocRead)<<30 | clockDataSize<<16 | kvmio<<8 | 0x7c
	kvmGetPIT2       = (iocRead)<<30 | pitStateSize<<16 | kvmio<<8 | 0x9f
	kvmSetPIT2       = (iocWrite)<<30 | pitStateSize<<16 | kvmio<<8 | 0xa0
)

// requestNames is read-only: the name of each request for error messages.
var requestNames = map[uintptr]string{
	kvmGetAPIVersion:       "KVM_GET_API_VERSION",
	kvmCreateVM:            "KVM_CREATE_VM",
	kvmGetMSRIndexList:     "KVM_GET_MSR_INDEX_LIST",
	kvmCheckExtension:      "KVM_CHECK_EXTENSION",
	kvmGetVCPUMmapSize:     "KVM_GET_VCPU_MMAP_SIZE",
	kvmGetSupportedCPUID:   "KVM_GET_SUPPORTED_CPUID",
	kvmCreateVCPU:          "KVM_CREATE_VCPU",
	kvmSetUserMemoryRegion: "KVM_SET_USER_MEMORY_REGION",
	kvmSetTSSAddr:          "KVM_SET_TSS_ADDR",
	kvmSetIdentityMapAddr:  "KVM_SET_IDENTITY_MAP_ADDR",
	kvmCreateIRQChip:       "KVM_CREATE_IRQCHIP",
	kvmIRQLine:             "KVM_IRQ_LINE",
	kvmSetGSIRouting:       "KVM_SET_GSI_ROUTING",
	kvmIRQFD:               "KVM_IRQFD",
	kvmCreatePIT2:          "KVM_CREATE_PIT2",
	kvmIOEventFD:           "KVM_IOEVENTFD",
	kvmSignalMSI:           "KVM_SIGNAL_MSI",
	kvmRun:                 "KVM_RUN",
	kvmGetRegs:             "KVM_GET_REGS",
	kvmSetRegs:             "KVM_SET_REGS",
	kvmGetSregs:            "KVM_GET_SREGS",
	kvmSetSregs:            "KVM_SET_SREGS",
	kvmGetMSRs:             "KVM_GET_MSRS",
	kvmSetMSRs:             "KVM_SET_MSRS",
	kvmSetFPU:              "KVM_SET_FPU",
	kvmGetLAPIC:            "KVM_GET_LAPIC",
	kvmSetLAPIC:            "KVM_SET_LAPIC",
	kvmSetCPUID2:           "KVM_SET_CPUID2",
	kvmGetMPState:          "KVM_GET_MP_STATE",
	kvmGetCPUID2:           "KVM_GET_CPUID2",
	kvmSetMPState:          "KVM_SET_MP_STATE",
	kvmGetVCPUEvents:       "KVM_GET_VCPU_EVENTS",
	kvmSetVCPUEvents:       "KVM_SET_VCPU_EVENTS",
	kvmGetDebugRegs:        "KVM_GET_DEBUGREGS",
	kvmSetDebugRegs:        "KVM_SET_DEBUGREGS",
	kvmSetTSCKHz:           "KVM_SET_TSC_KHZ",
	kvmGetTSCKHz:           "KVM_GET_TSC_KHZ",
	kvmGetXSAVE:            "KVM_GET_XSAVE",
	kvmSetXSAVE:            "KVM_SET_XSAVE",
	kvmGetXCRs:             "KVM_GET_XCRS",
	kvmSetXCRs:             "KVM_SET_XCRS",
	kvmGetXSAVE2:           "KVM_GET_XSAVE2",
	kvmGetIRQChip:          "KVM_GET_IRQCHIP",
	kvmSetIRQChip:          "KVM_SET_IRQCHIP",
	kvmSetClock:            "KVM_SET_CLOCK",
	kvmGetClock:            "KVM_GET_CLOCK",
	kvmGetPIT2:             "KVM_GET_PIT2",
	kvmSetPIT2:             "KVM_SET_PIT2",
}

// ioctlName returns the symbolic name of a request number.
func ioctlName(req uintptr) string {
	if n, ok := requestNames[req]; ok {
		return n
	}
	return fmt.Sprintf("ioctl %#x", req)
}

// errIoctl wraps err with the name of the ioctl that returned it.
func errIoctl(req uintptr, err error) error {
	return fmt.Errorf("kvm: %s: %w", ioctlName(req), err)
}

// maxEINTR bounds retryEINTR: a signal storm that outlasts it is reported
// rather than spun on.
const maxEINTR = 1000

// retryEINTR calls op again while it fails with EINTR, for ioctls that may
// be interrupted before they did anything and are safe to repeat.
func retryEINTR(op func() (uintptr, error)) (uintptr, error) {
	for i := 0; ; i++ {
		r, err := op()
		if !errors.Is(err, unix.EINTR) || i >= maxEINTR {
			return r, err
		}
	}
}
