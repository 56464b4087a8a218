package devices

// ACPI hardware-reduced sleep control register bits.
const (
	acpiSleepTypeShift = 2
	acpiSleepTypeMask  = 0x7
	acpiSleepEnable    = 1 << 5
)

// ACPISleepControl is the one-byte sleep control register of a
// hardware-reduced ACPI machine (the FADT's SLEEP_CONTROL_REG). When the
// guest writes SLP_EN (bit 5) with SLP_TYP (bits 4:2) equal to the S5
// value its DSDT's \_S5 package gives, the VM powers off (ExitPowerOff).
// Other sleep states are ignored: this machine does not sleep.
//
// The port is the caller's (boot.ACPISleepControlPort); insert the device
// there with size 1. The FADT may point the sleep status register at the
// same port: Linux writes WAK_STS (0x80) there before sleeping, which has
// no SLP_EN and so does nothing. Reads return 0 (SLP_EN is write-only and
// WAK_STS is never set). Wider writes use their low byte.
type ACPISleepControl struct {
	s5   uint8
	exit ExitFunc
}

// NewACPISleepControl returns the register for a machine whose S5 SLP_TYP
// is s5SleepType (boot.ACPISleepTypeS5; only its low 3 bits count).
func NewACPISleepControl(s5SleepType uint8, exit ExitFunc) *ACPISleepControl {
	return &ACPISleepControl{s5: s5SleepType & acpiSleepTypeMask, exit: exit}
}

// Read fills data with zeros.
func (a *ACPISleepControl) Read(_ uint64, data []byte) { fill(data, 0) }

// Write powers off on SLP_EN with the S5 sleep type.
func (a *ACPISleepControl) Write(_ uint64, data []byte) {
	if len(data) == 0 || a.exit == nil {
		return
	}
	v := data[0]
	if v&acpiSleepEnable != 0 && (v>>acpiSleepTypeShift)&acpiSleepTypeMask == a.s5 {
		a.exit(Exit{Kind: ExitPowerOff})
	}
}
