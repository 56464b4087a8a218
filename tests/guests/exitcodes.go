package guests

// Guest exit codes (the value written to the debug-exit port). They mirror
// the EXIT_* definitions in src/lib.h; a unit test keeps the two in step.
const (
	// ExitOK is a guest's normal exit code.
	ExitOK = 0
	// ExitBadArgs is smp's exit code for a bad cpus=N or an unusable APIC.
	ExitBadArgs = 2
	// ExitSMPTimeout is smp's exit code when fewer than cpus=N CPUs came up in time.
	ExitSMPTimeout = 3
	// ExitSMPExtra is smp's exit code when more CPUs than cpus=N came up.
	ExitSMPExtra = 4
	// ExitRTCAbsent is rtc's exit code when no CMOS RTC answers.
	ExitRTCAbsent = 5
	// ExitRTCInvalid is rtc's exit code when the RTC gives an impossible date or never settles.
	ExitRTCInvalid = 6
	// ExitSMPNoPage is smp's exit code when no RAM page below 640 KiB is free for the AP trampoline.
	ExitSMPNoPage = 7
	// ExitFaultSurvived is fault's exit code if ud2 with an empty IDT did not stop the VM.
	ExitFaultSurvived = 8
	// ExitBadStartInfo is the exit code when start_info is missing or has a bad magic.
	ExitBadStartInfo = 125
)

// QEMUStatus is the exit status QEMU's isa-debug-exit device gives its
// process for a guest exit code v: (v << 1) | 1, truncated to 8 bits by the OS.
func QEMUStatus(v int) int {
	return ((v&0xff)<<1 | 1) & 0xff
}
