package kvm

import "fmt"

// Cap is a KVM capability number for KVM_CHECK_EXTENSION.
type Cap int

// Capabilities Corral relies on or probes.
const (
	CapIRQChip            Cap = 0
	CapHLT                Cap = 1
	CapUserMemory         Cap = 3
	CapSetTSSAddr         Cap = 4
	CapExtCPUID           Cap = 7
	CapNrVCPUs            Cap = 9
	CapNrMemslots         Cap = 10
	CapMPState            Cap = 14
	CapIRQRouting         Cap = 25
	CapIRQFD              Cap = 32
	CapPIT2               Cap = 33
	CapIOEventFD          Cap = 36
	CapSetIdentityMapAddr Cap = 37
	CapMaxVCPUs           Cap = 66
	CapSignalMSI          Cap = 77
	CapImmediateExit      Cap = 136

	// Snapshot state (state.go, state_vm.go).
	CapAdjustClock Cap = 39
	CapVCPUEvents  Cap = 41
	CapDebugRegs   Cap = 50
	CapXSAVE       Cap = 55
	CapXCRs        Cap = 56
	CapTSCControl  Cap = 60
	CapGetTSCKHz   Cap = 61
	CapXSAVE2      Cap = 208 // answers the KVM_GET_XSAVE2 buffer size
)

// RequiredCaps returns the capabilities a Corral VM cannot run without, in
// a new slice each call (the list is not for callers to change).
func RequiredCaps() []Cap {
	return []Cap{
		CapIRQChip, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapMPState,
		CapIRQRouting, CapIRQFD, CapPIT2, CapIOEventFD, CapSetIdentityMapAddr,
		CapSignalMSI, CapImmediateExit,
	}
}

// String returns the capability's name in <linux/kvm.h>.
func (c Cap) String() string {
	switch c {
	case CapIRQChip:
		return "KVM_CAP_IRQCHIP"
	case CapHLT:
		return "KVM_CAP_HLT"
	case CapUserMemory:
		return "KVM_CAP_USER_MEMORY"
	case CapSetTSSAddr:
		return "KVM_CAP_SET_TSS_ADDR"
	case CapExtCPUID:
		return "KVM_CAP_EXT_CPUID"
	case CapNrVCPUs:
		return "KVM_CAP_NR_VCPUS"
	case CapNrMemslots:
		return "KVM_CAP_NR_MEMSLOTS"
	case CapMPState:
		return "KVM_CAP_MP_STATE"
	case CapIRQRouting:
		return "KVM_CAP_IRQ_ROUTING"
	case CapIRQFD:
		return "KVM_CAP_IRQFD"
	case CapPIT2:
		return "KVM_CAP_PIT2"
	case CapIOEventFD:
		return "KVM_CAP_IOEVENTFD"
	case CapSetIdentityMapAddr:
		return "KVM_CAP_SET_IDENTITY_MAP_ADDR"
	case CapMaxVCPUs:
		return "KVM_CAP_MAX_VCPUS"
	case CapSignalMSI:
		return "KVM_CAP_SIGNAL_MSI"
	case CapImmediateExit:
		return "KVM_CAP_IMMEDIATE_EXIT"
	case CapAdjustClock:
		return "KVM_CAP_ADJUST_CLOCK"
	case CapVCPUEvents:
		return "KVM_CAP_VCPU_EVENTS"
	case CapDebugRegs:
		return "KVM_CAP_DEBUGREGS"
	case CapXSAVE:
		return "KVM_CAP_XSAVE"
	case CapXCRs:
		return "KVM_CAP_XCRS"
	case CapTSCControl:
		return "KVM_CAP_TSC_CONTROL"
	case CapGetTSCKHz:
		return "KVM_CAP_GET_TSC_KHZ"
	case CapXSAVE2:
		return "KVM_CAP_XSAVE2"
	}
	return fmt.Sprintf("KVM_CAP(%d)", int(c))
}
