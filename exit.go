package corral

import "fmt"

// ExitReason says how a machine ended.
type ExitReason int

// The ways a machine ends.
const (
	// ExitPowerOff: the guest powered off (ACPI S5, or a PVH/PSCI-style
	// shutdown event from KVM).
	ExitPowerOff ExitReason = iota + 1
	// ExitReset: the guest asked for a reset (i8042 reset line, ACPI reset
	// register, PCI reset control, or a reset system event from KVM). It is
	// a clean end: Corral does not reboot, the machine ends.
	ExitReset
	// ExitDebug: the guest wrote a byte to the debug-exit port (0xf4);
	// Exit.Code holds it.
	ExitDebug
	// ExitStopped: the host stopped the machine (Stop, or Start's context).
	ExitStopped
	// ExitError: the VMM failed (a host error, an ioctl that failed, a
	// vCPU state KVM refused to enter); Exit.Err says why, as a *VCPUError
	// with the vCPU's registers when a vCPU was involved.
	ExitError
	// ExitGuestFault: the guest ended itself badly: a triple fault, a crash
	// system event, HLT with interrupts off and nothing to wake it, or an
	// instruction KVM cannot emulate. The VMM is fine; Exit.Err is a
	// *VCPUError with what happened and the vCPU's registers.
	ExitGuestFault
)

// String names the exit reason.
func (r ExitReason) String() string {
	switch r {
	case ExitPowerOff:
		return "power-off"
	case ExitReset:
		return "reset"
	case ExitDebug:
		return "debug-exit"
	case ExitStopped:
		return "stopped"
	case ExitError:
		return "error"
	case ExitGuestFault:
		return "guest-fault"
	}
	return fmt.Sprintf("ExitReason(%d)", int(r))
}

// Exit is how a machine ended.
type Exit struct {
	Reason ExitReason
	Code   uint8 // the debug-exit byte, for ExitDebug
	Err    error // what went wrong, for ExitError and ExitGuestFault
	// Detail says more, for logs: "system event", the context's cause, ...
	Detail string
}

// String describes the exit in one line.
func (e Exit) String() string {
	s := e.Reason.String()
	if e.Reason == ExitDebug {
		s = fmt.Sprintf("%s code %d", s, e.Code)
	}
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}
