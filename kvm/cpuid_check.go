package kvm

import (
	"errors"
	"fmt"
	"strings"
)

// ErrCPUIDMismatch is wrapped by CheckCPUID's error: the saved vCPU was
// given CPU features this host's KVM cannot give, so a guest restored here
// could fault on an instruction it was told it may use.
var ErrCPUIDMismatch = errors.New("kvm: saved CPUID has features this host cannot give")

// CPUID registers, for checkedFeatures.
const (
	regEAX = iota
	regEBX
	regECX
	regEDX
)

var regNames = [...]string{"EAX", "EBX", "ECX", "EDX"}

// checkedFeatures are the CPUID registers holding feature bits, with the
// bits to ignore: those GuestCPUID synthesizes whatever the host (hypervisor
// bit, HTT) and those KVM mirrors from guest-controlled state into the
// vCPU's leaves (OSXSAVE from CR4, APIC from the APIC base MSR, OSPKE from
// CR4), which KVM_GET_SUPPORTED_CPUID does not list.
var checkedFeatures = []struct {
	fn, idx uint32
	reg     int
	ignore  uint32
}{
	{0x1, 0, regECX, 1<<31 | 1<<27}, // hypervisor, OSXSAVE
	{0x1, 0, regEDX, 1<<28 | 1<<9},  // HTT, APIC
	{0x7, 0, regEBX, 0},
	{0x7, 0, regECX, 1 << 4}, // OSPKE
	{0x7, 0, regEDX, 0},
	{0xd, 0, regEAX, 0}, // XCR0 features, low half
	{0xd, 0, regEDX, 0}, // XCR0 features, high half
	{0xd, 1, regEAX, 0}, // XSAVEOPT, XSAVEC, XGETBV1, XSAVES
	{0xd, 1, regECX, 0}, // IA32_XSS features
	{0xd, 1, regEDX, 0},
	{0x80000001, 0, regECX, 0},
	{0x80000001, 0, regEDX, 0},
}

// CheckCPUID refuses a saved vCPU's CPUID (VCPUState.CPUID) whose feature
// bits the host cannot give (supported is System.SupportedCPUID): every bit
// set in the feature registers of leaves 0x1, 0x7.0, 0xd.0, 0xd.1 and
// 0x80000001 must be set in supported too. The error wraps
// ErrCPUIDMismatch and names every leaf, sub-leaf, register and bits.
func CheckCPUID(saved, supported []CPUIDEntry) error {
	var missing []string
	for _, c := range checkedFeatures {
		want := cpuidReg(saved, c.fn, c.idx, c.reg) &^ c.ignore
		have := cpuidReg(supported, c.fn, c.idx, c.reg)
		if lack := want &^ have; lack != 0 {
			missing = append(missing, fmt.Sprintf("leaf %#x subleaf %d %s bits %#x", c.fn, c.idx, regNames[c.reg], lack))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrCPUIDMismatch, strings.Join(missing, "; "))
	}
	return nil
}

// cpuidReg returns register reg of leaf fn, sub-leaf idx in entries (the
// sub-leaf is compared only where the entry says it matters), or 0 when
// the leaf is absent.
func cpuidReg(entries []CPUIDEntry, fn, idx uint32, reg int) uint32 {
	for _, e := range entries {
		if e.Function != fn || (e.Flags&CPUIDFlagSignificantIndex != 0 && e.Index != idx) {
			continue
		}
		switch reg {
		case regEAX:
			return e.EAX
		case regEBX:
			return e.EBX
		case regECX:
			return e.ECX
		default:
			return e.EDX
		}
	}
	return 0
}
