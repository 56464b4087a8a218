package kvm

import (
	"errors"
	"strings"
	"testing"
)

func hostLeaves() []CPUIDEntry {
	return []CPUIDEntry{
		{Function: 0, EAX: 0x1f},
		{Function: 1, EAX: 0x00a50f00, EBX: 0x00000800, ECX: 0xf6d83203, EDX: 0x178bfbff},
		{Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0x219c07ab, ECX: 0x0040068c, EDX: 0x10},
		{Function: 0xd, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 0x207, EBX: 0x340, ECX: 0x988},
		{Function: 0xd, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: 0xf, ECX: 0x1800},
		{Function: 0x80000001, ECX: 0x75c237ff, EDX: 0x2fd3fbff},
	}
}

// The CPUID a vCPU gets (GuestCPUID of the host's leaves, with the bits
// KVM mirrors from guest state set) passes on the same host.
func TestCheckCPUIDSameHost(t *testing.T) {
	sup := hostLeaves()
	for i := range sup {
		if sup[i].Function == 1 {
			sup[i].ECX &^= 1<<31 | 1<<27 // supported lists neither hypervisor nor OSXSAVE
			sup[i].EDX &^= 1 << 28
		}
	}
	saved := GuestCPUID(sup, 1, Topology{CPUs: 2})
	for i := range saved {
		switch saved[i].Function {
		case 1:
			saved[i].ECX |= 1 << 27 // OSXSAVE: the guest set CR4.OSXSAVE
		case 7:
			saved[i].ECX |= 1 << 4 // OSPKE
		}
	}
	if err := CheckCPUID(saved, sup); err != nil {
		t.Fatalf("CPUID of this host refused: %v", err)
	}
	if err := CheckCPUID(nil, sup); err != nil {
		t.Fatalf("a vCPU without CPUID refused: %v", err)
	}
}

func TestCheckCPUIDMissingFeatures(t *testing.T) {
	sup := hostLeaves()
	saved := hostLeaves()
	saved[2].EBX |= 1 << 16            // AVX-512F in 7.0 EBX
	saved[3].EAX |= 0xe0               // AVX-512 state in XCR0
	saved[5].ECX |= 1 << 11            // XOP in 0x80000001 ECX
	saved[1].ECX |= 1 << 31            // hypervisor: ignored
	sup[4] = CPUIDEntry{Function: 0x0} // host without leaf 0xd.1
	err := CheckCPUID(saved, sup)
	if !errors.Is(err, ErrCPUIDMismatch) {
		t.Fatalf("got %v, want ErrCPUIDMismatch", err)
	}
	for _, want := range []string{
		"leaf 0x7 subleaf 0 EBX bits 0x10000",
		"leaf 0xd subleaf 0 EAX bits 0xe0",
		"leaf 0xd subleaf 1 EAX bits 0xf",
		"leaf 0xd subleaf 1 ECX bits 0x1800",
		"leaf 0x80000001 subleaf 0 ECX bits 0x800",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "leaf 0x1 ") {
		t.Errorf("error %q names leaf 1, whose only extra bit is the hypervisor bit", err)
	}
}
