package kvm

// Request is an ioctl request number with its name.
type Request struct {
	Name   string
	Number uintptr
}

// RunningIoctls returns the requests a machine issues once it is set up:
// running vCPUs, interrupts, eventfd wiring done when the guest programs
// its devices, register access for dumps, and the state reads of a
// snapshot. Creating VMs, vCPUs, IRQ chips and memory slots is left out,
// so a seccomp filter built from this list stops a compromised VMM from
// giving the guest anything new.
func RunningIoctls() []Request {
	reqs := []uintptr{
		kvmRun, kvmIRQLine, kvmIRQFD, kvmIOEventFD, kvmSignalMSI, kvmSetGSIRouting,
		kvmGetRegs, kvmSetRegs, kvmGetSregs, kvmSetSregs, kvmGetMSRs, kvmSetMSRs,
		kvmGetLAPIC, kvmSetLAPIC, kvmGetMPState, kvmSetFPU, kvmCheckExtension,
		// Reading state for a snapshot of a running (confined) machine.
		kvmGetCPUID2, kvmGetXSAVE, kvmGetXSAVE2, kvmGetXCRs, kvmGetDebugRegs,
		kvmGetVCPUEvents, kvmGetTSCKHz, kvmGetIRQChip, kvmGetPIT2, kvmGetClock,
	}
	out := make([]Request, len(reqs))
	for i, r := range reqs {
		out[i] = Request{Name: ioctlName(r), Number: r}
	}
	return out
}
