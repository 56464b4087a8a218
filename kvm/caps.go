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
)

// RequiredCaps are the capabilities a Corral VM cannot run without.
var RequiredCaps = []Cap{
	CapIRQChip, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapMPState,
	CapIRQRouting, CapIRQFD, CapPIT2, CapIOEventFD, CapSetIdentityMapAddr,
	CapSignalMSI, CapImmediateExit,
}

var capNames = map[Cap]string{
	CapIRQChip: "KVM_CAP_IRQCHIP", CapHLT: "KVM_CAP_HLT", CapUserMemory: "KVM_CAP_USER_MEMORY",
	CapSetTSSAddr: "KVM_CAP_SET_TSS_ADDR", CapExtCPUID: "KVM_CAP_EXT_CPUID", CapNrVCPUs: "KVM_CAP_NR_VCPUS",
	CapNrMemslots: "KVM_CAP_NR_MEMSLOTS", CapMPState: "KVM_CAP_MP_STATE", CapIRQRouting: "KVM_CAP_IRQ_ROUTING",
	CapIRQFD: "KVM_CAP_IRQFD", CapPIT2: "KVM_CAP_PIT2", CapIOEventFD: "KVM_CAP_IOEVENTFD",
	CapSetIdentityMapAddr: "KVM_CAP_SET_IDENTITY_MAP_ADDR", CapMaxVCPUs: "KVM_CAP_MAX_VCPUS",
	CapSignalMSI: "KVM_CAP_SIGNAL_MSI", CapImmediateExit: "KVM_CAP_IMMEDIATE_EXIT",
}

// String returns the capability's name in <linux/kvm.h>.
func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return fmt.Sprintf("KVM_CAP(%d)", int(c))
}
