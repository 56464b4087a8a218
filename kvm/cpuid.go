package kvm

// Topology describes the CPUs of a VM for CPUID: Corral gives every vCPU its
// own core in a single socket, one thread per core.
type Topology struct {
	CPUs int // number of vCPUs (1..255)
}

// apicIDBits is the number of APIC-ID bits that cover n CPUs.
func apicIDBits(n int) uint32 {
	b := uint32(0)
	for (1 << b) < n {
		b++
	}
	return b
}

// cpuidInvariantTSC is leaf 0x80000007's EDX bit 8, the invariant TSC.
const cpuidInvariantTSC = 1 << 8

// hypervisorSignature is "KVMKVMKVM\0\0\0", the signature Linux looks for in
// leaf 0x40000000 to enable its KVM paravirtual features.
var hypervisorSignature = [3]uint32{0x4b4d564b, 0x564b4d56, 0x0000004d}

// GuestCPUID derives the CPUID leaves of vCPU id from KVM's supported set:
// the APIC ID and logical-processor counts in leaf 1, a consistent topology
// in leaves 4 and 0xB, the hypervisor bit and leaf, no PMU (leaf 0xA),
// which KVM cannot virtualise everywhere, and no invariant TSC, so that the
// guest keeps time by kvm-clock, which a restore moves on. The input is not
// modified.
func GuestCPUID(supported []CPUIDEntry, id int, topo Topology) []CPUIDEntry {
	n := topo.CPUs
	if n < 1 {
		n = 1
	}
	shift := apicIDBits(n)
	out := make([]CPUIDEntry, 0, len(supported)+1)
	haveHV := false
	for _, e := range supported {
		switch e.Function {
		case 1:
			e.EBX = e.EBX&0x0000ffff | uint32(n)<<16 | uint32(id)<<24
			if n > 1 {
				e.EDX |= 1 << 28 // HTT: the logical-processor count is valid
			}
			e.ECX |= 1 << 31 // running under a hypervisor
		case 4:
			// Cache leaves: cores per package in EAX[31:26]; sharing in
			// EAX[25:14]: L1/L2 private to a core, L3 shared by all.
			sharing := uint32(0)
			if (e.EAX>>5)&7 == 3 {
				sharing = uint32(n - 1)
			}
			e.EAX = e.EAX&0x3fff | sharing<<14 | uint32(n-1)<<26
		case 0xa:
			e.EAX, e.EBX, e.ECX, e.EDX = 0, 0, 0, 0
		case 0x80000007:
			// No invariant TSC: with it Linux rates the TSC above
			// kvm-clock and keeps time by the TSC, which a restored
			// snapshot resumes as saved, so the guest's clock would not
			// move on by the time between snapshot and restore. kvm-clock
			// does (KVM_SET_CLOCK). QEMU leaves invtsc out by default for
			// the same reason (it blocks migration).
			e.EDX &^= cpuidInvariantTSC
		case 0xb, 0x1f:
			// Rewritten below: KVM may list only sub-leaf 0 (or nothing).
			continue
		case 0x40000000:
			haveHV = true
			if e.EAX < 0x40000001 {
				e.EAX = 0x40000001
			}
			e.EBX, e.ECX, e.EDX = hypervisorSignature[0], hypervisorSignature[1], hypervisorSignature[2]
		}
		out = append(out, e)
	}
	// Extended topology (leaves 0xB and 0x1F): SMT level of one thread,
	// core level of n cores, then the terminating invalid level. Every
	// sub-leaf Linux reads must be present, or KVM answers zeros and the
	// guest puts each CPU in a package of its own.
	for _, fn := range []uint32{0xb, 0x1f} {
		if !hasLeaf(supported, fn) {
			continue
		}
		out = append(out,
			CPUIDEntry{Function: fn, Index: 0, Flags: CPUIDFlagSignificantIndex, EAX: 0, EBX: 1, ECX: 1 << 8, EDX: uint32(id)},
			CPUIDEntry{Function: fn, Index: 1, Flags: CPUIDFlagSignificantIndex, EAX: shift, EBX: uint32(n), ECX: 2<<8 | 1, EDX: uint32(id)},
			CPUIDEntry{Function: fn, Index: 2, Flags: CPUIDFlagSignificantIndex, EAX: 0, EBX: 0, ECX: 2, EDX: uint32(id)})
	}
	if !haveHV {
		out = append(out, CPUIDEntry{Function: 0x40000000, EAX: 0x40000001,
			EBX: hypervisorSignature[0], ECX: hypervisorSignature[1], EDX: hypervisorSignature[2]})
	}
	return out
}

// BootMSRs returns the MSR values a vCPU starts with, keeping only the MSRs
// in supported (KVM_GET_MSR_INDEX_LIST), so the VMM also runs on nested and
// restricted hosts that refuse some of them.
func BootMSRs(supported []uint32) []MSR {
	want := []MSR{
		{MSRIA32SysenterCS, 0}, {MSRIA32SysenterESP, 0}, {MSRIA32SysenterEIP, 0},
		{MSRSTAR, 0}, {MSRCSTAR, 0}, {MSRKernelGSBase, 0}, {MSRSyscallMask, 0}, {MSRLSTAR, 0},
		{MSRIA32TSC, 0},
		{MSRIA32MiscEnable, MSRIA32MiscEnableFastString},
	}
	ok := make(map[uint32]bool, len(supported))
	for _, s := range supported {
		ok[s] = true
	}
	var out []MSR
	for _, m := range want {
		if ok[m.Index] {
			out = append(out, m)
		}
	}
	return out
}

// hasLeaf reports whether entries list CPUID function fn.
func hasLeaf(entries []CPUIDEntry, fn uint32) bool {
	for _, e := range entries {
		if e.Function == fn {
			return true
		}
	}
	return false
}
