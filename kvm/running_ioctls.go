package kvm

// Request is an ioctl request number with its name.
type Request struct {
	Name   string
	Number uintptr
}

// RunningIoctls returns the requests a machine issues once it is set up:
// running vCPUs, interrupts, eventfd wiring done when the guest programs
// its devices, and register access for dumps. Creating VMs, vCPUs, IRQ
// chips and memory slots is left out, so a seccomp filter built from this
// list stops a compromised VMM from giving the guest anything new.
func RunningIoctls() []Request {
	reqs := []uintptr{
		kvmRun, kvmIRQLine, kvmIRQFD, kvmIOEventFD, kvmSignalMSI, kvmSetGSIRouting,
		kvmGetRegs, kvmSetRegs, kvmGetSregs, kvmSetSregs, kvmGetMSRs, kvmSetMSRs,
		kvmGetLAPIC, kvmSetLAPIC, kvmGetMPState, kvmSetFPU, kvmCheckExtension,
	}
	out := make([]Request, len(reqs))
	for i, r := range reqs {
		out[i] = Request{Name: ioctlName(r), Number: r}
	}
	return out
}
