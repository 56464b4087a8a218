package kvm

import "fmt"

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons (KVM_EXIT_*).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
	ExitIOAPICEOI     ExitReason = 26
	ExitX86RDMSR      ExitReason = 29
	ExitX86WRMSR      ExitReason = 30
)

// System event types for ExitSystemEvent.
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "KVM_EXIT_UNKNOWN", ExitException: "KVM_EXIT_EXCEPTION", ExitIO: "KVM_EXIT_IO",
	ExitHypercall: "KVM_EXIT_HYPERCALL", ExitDebug: "KVM_EXIT_DEBUG", ExitHLT: "KVM_EXIT_HLT",
	ExitMMIO: "KVM_EXIT_MMIO", ExitIRQWindowOpen: "KVM_EXIT_IRQ_WINDOW_OPEN", ExitShutdown: "KVM_EXIT_SHUTDOWN",
	ExitFailEntry: "KVM_EXIT_FAIL_ENTRY", ExitIntr: "KVM_EXIT_INTR", ExitSetTPR: "KVM_EXIT_SET_TPR",
	ExitTPRAccess: "KVM_EXIT_TPR_ACCESS", ExitNMI: "KVM_EXIT_NMI", ExitInternalError: "KVM_EXIT_INTERNAL_ERROR",
	ExitSystemEvent: "KVM_EXIT_SYSTEM_EVENT", ExitIOAPICEOI: "KVM_EXIT_IOAPIC_EOI",
	ExitX86RDMSR: "KVM_EXIT_X86_RDMSR", ExitX86WRMSR: "KVM_EXIT_X86_WRMSR",
}

// String returns the exit reason's name in <linux/kvm.h>.
func (e ExitReason) String() string {
	if n, ok := exitNames[e]; ok {
		return n
	}
	return fmt.Sprintf("KVM_EXIT(%d)", uint32(e))
}

// Internal error suberrors (KVM_INTERNAL_ERROR_*).
const (
	InternalErrorEmulation      = 1
	InternalErrorSimulEx        = 2
	InternalErrorDeliveryEv     = 3
	InternalErrorUnexpectedExit = 4
)
