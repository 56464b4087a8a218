package kvm

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"golang.org/x/sys/unix"
)

// stateVM creates a VM with the in-kernel irqchip and PIT (the LAPIC and
// irqchip ioctls need them) and vCPU 0, given this host's CPUID as Corral
// gives it. Memory, when not nil, is mapped at 0 for a real-mode guest.
func stateVM(t *testing.T, s *System, mem []byte) (*VM, *VCPU) {
	t.Helper()
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if mem != nil {
		if err := vm.SetUserMemoryRegion(0, 0, mem); err != nil {
			t.Fatal(err)
		}
	}
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(); err != nil {
		t.Fatal(err)
	}
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return vm, v
}

func guestCPUID(t *testing.T, s *System) []CPUIDEntry {
	t.Helper()
	sup, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	return GuestCPUID(sup, 0, Topology{CPUs: 1})
}

func msrMap(msrs []MSR) map[uint32]uint64 {
	m := make(map[uint32]uint64, len(msrs))
	for _, x := range msrs {
		m[x.Index] = x.Data
	}
	return m
}

// TestVCPUStateSaveRestore gives a vCPU distinctive registers, MSRs, TPR,
// FPU/SSE content, debug registers, events and MP state, saves it,
// restores it into a vCPU of a second VM and saves that: every field must
// match (IA32_TSC only moves forward).
func TestVCPUStateSaveRestore(t *testing.T) {
	s := openOrSkip(t)
	msrList, err := s.MSRIndexList()
	if err != nil {
		t.Fatal(err)
	}
	_, src := stateVM(t, s, nil)
	if err := src.SetCPUID(guestCPUID(t, s)); err != nil {
		t.Fatal(err)
	}
	sr, err := src.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.GDT = DTable{Base: 0x7000, Limit: 0x37}
	sr.IDT = DTable{Base: 0x8000, Limit: 0xfff}
	if err := src.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	regs := Regs{RAX: 0x1122334455667788, RBX: 0xb, RCX: 0xc, RDX: 0xd, RSI: 0x51, RDI: 0xd1, RSP: 0x7ff0, RBP: 0x7ff8,
		R8: 8, R9: 9, R10: 10, R11: 11, R12: 12, R13: 13, R14: 14, R15: 15, RIP: 0x1234, RFLAGS: 0x202}
	if err := src.SetRegs(regs); err != nil {
		t.Fatal(err)
	}
	if err := src.SetMSRs(BootMSRs(msrList)); err != nil {
		t.Fatal(err)
	}
	// A TSC far from the new VM's (KVM before 6.7 takes a host write
	// within a second of the expected TSC for a vCPU synchronization and
	// keeps its own offset).
	if err := src.SetMSRs([]MSR{{MSRKernelGSBase, 0xffff888012345678}, {MSRIA32SysenterEIP, 0xffffffff81a00000}, {MSRIA32TSC, 1 << 40}}); err != nil {
		t.Fatal(err)
	}
	lapic, err := src.LAPIC()
	if err != nil {
		t.Fatal(err)
	}
	lapic.Set(0x80, 0x20) // TPR
	if err := src.SetLAPIC(lapic); err != nil {
		t.Fatal(err)
	}
	// SSE state through the XSAVE area: KVM_SET_FPU writes the legacy
	// region without marking SSE in XSTATE_BV, so KVM_GET_XSAVE (6.1)
	// reports the init state for it.
	xmm0 := [16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	area, err := src.xsave()
	if err != nil {
		t.Fatal(err)
	}
	copy(area[xsaveOffXMM0:], xmm0[:])
	binary.LittleEndian.PutUint32(area[xsaveOffMXCSR:], 0x1fa0)
	binary.LittleEndian.PutUint64(area[xsaveOffXSTATEBV:], binary.LittleEndian.Uint64(area[xsaveOffXSTATEBV:])|xfeatureSSE)
	if err := src.setXSAVE(area); err != nil {
		t.Fatal(err)
	}
	dbg := DebugRegs{DB: [4]uint64{0x1000, 0x2000, 0x3000, 0x4000}, DR6: 0xffff0ff1, DR7: 0x403}
	if err := src.setFixed(kvmSetDebugRegs, &dbg); err != nil {
		t.Fatal(err)
	}
	var ev VCPUEvents
	if err := src.getFixed(kvmGetVCPUEvents, vcpuEventsSize, &ev); err != nil {
		t.Fatal(err)
	}
	ev.NMIMasked = 1 // KVM_GET_VCPU_EVENTS never reports a SIPI vector
	if err := src.setFixed(kvmSetVCPUEvents, &ev); err != nil {
		t.Fatal(err)
	}
	var mp [4]byte
	mp[0] = MPStateHalted
	if _, err := ioctlBuf(src.fd, kvmSetMPState, mp[:]); err != nil {
		t.Fatal(err)
	}

	saved, err := src.SaveState(msrList)
	if err != nil {
		t.Fatal(err)
	}
	// The state holds what was set.
	if saved.Regs != regs {
		t.Errorf("saved regs %+v, want %+v", saved.Regs, regs)
	}
	if got := msrMap(saved.MSRs)[MSRKernelGSBase]; got != 0xffff888012345678 {
		t.Errorf("saved KERNEL_GS_BASE %#x", got)
	}
	if len(saved.XSAVE) < xsaveLegacySize || !bytes.Equal(saved.XSAVE[xsaveOffXMM0:xsaveOffXMM0+16], xmm0[:]) {
		t.Errorf("XMM0 not in the saved XSAVE area (%d bytes)", len(saved.XSAVE))
	}
	if saved.LAPIC.Get(0x80) != 0x20 || saved.DebugRegs.DB != dbg.DB || saved.DebugRegs.DR7 != dbg.DR7 {
		t.Errorf("saved TPR %#x, debug registers %+v", saved.LAPIC.Get(0x80), saved.DebugRegs)
	}
	if saved.Events.NMIMasked != 1 || saved.MPState != MPStateHalted {
		t.Errorf("saved events %+v, MP state %d", saved.Events, saved.MPState)
	}
	if len(saved.CPUID) == 0 || saved.TSCKHz == 0 || len(saved.XCRs) == 0 {
		t.Errorf("saved %d CPUID leaves, TSC %d kHz, %d XCRs", len(saved.CPUID), saved.TSCKHz, len(saved.XCRs))
	}
	if len(saved.MSRs) == 0 || len(saved.MSRs) > len(msrList) {
		t.Errorf("saved %d MSRs of %d listed", len(saved.MSRs), len(msrList))
	}
	t.Logf("saved %d of %d listed MSRs, XSAVE %d bytes, TSC %d kHz", len(saved.MSRs), len(msrList), len(saved.XSAVE), saved.TSCKHz)

	// Through the encoding, as a snapshot would.
	enc, err := saved.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var decoded VCPUState
	if err := decoded.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	_, dst := stateVM(t, s, nil)
	if err := dst.RestoreState(&decoded); err != nil {
		t.Fatal(err)
	}
	got, err := dst.SaveState(msrList)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.CPUID, saved.CPUID) {
		t.Errorf("CPUID differs after restore")
	}
	if got.Regs != saved.Regs {
		t.Errorf("regs after restore %+v, want %+v", got.Regs, saved.Regs)
	}
	if got.Sregs != saved.Sregs {
		t.Errorf("sregs after restore %+v, want %+v", got.Sregs, saved.Sregs)
	}
	if !bytes.Equal(got.XSAVE, saved.XSAVE) {
		t.Errorf("XSAVE area differs after restore (first at byte %d)", firstDiff(got.XSAVE, saved.XSAVE))
	}
	if !reflect.DeepEqual(got.XCRs, saved.XCRs) {
		t.Errorf("XCRs after restore %+v, want %+v", got.XCRs, saved.XCRs)
	}
	if got.DebugRegs != saved.DebugRegs {
		t.Errorf("debug registers after restore %+v, want %+v", got.DebugRegs, saved.DebugRegs)
	}
	if got.LAPIC != saved.LAPIC {
		t.Errorf("LAPIC differs after restore (first at byte %#x)", firstDiff(got.LAPIC.Regs[:], saved.LAPIC.Regs[:]))
	}
	if got.Events != saved.Events {
		t.Errorf("events after restore %+v, want %+v", got.Events, saved.Events)
	}
	if got.MPState != saved.MPState || got.TSCKHz != saved.TSCKHz {
		t.Errorf("MP state %d, TSC %d kHz after restore, want %d, %d", got.MPState, got.TSCKHz, saved.MPState, saved.TSCKHz)
	}
	gm, sm := msrMap(got.MSRs), msrMap(saved.MSRs)
	if len(gm) != len(sm) {
		t.Errorf("%d MSRs readable after restore, %d before", len(gm), len(sm))
	}
	for idx, want := range sm {
		g, ok := gm[idx]
		switch {
		case !ok:
			t.Errorf("MSR %#x not readable after restore", idx)
		case idx == MSRIA32TSC:
			if g < want || g-want > uint64(saved.TSCKHz)*1000*120 {
				t.Errorf("IA32_TSC %d after restore, saved %d: more than 120 s apart or backwards", g, want)
			}
		case idx == msrHVVPRuntime || idx == msrHVTimeRefCount:
			// Clocks: the vCPU's run time and the VM's kvmclock.
		case g != want:
			t.Errorf("MSR %#x = %#x after restore, want %#x", idx, g, want)
		}
	}
}

// Offsets in the XSAVE area, its SSE feature bit, and Hyper-V MSRs that
// count time (readable on KVM whether or not the guest sees Hyper-V).
const (
	xsaveOffMXCSR     = 24
	xsaveOffXMM0      = 160
	xsaveOffXSTATEBV  = 512
	xfeatureSSE       = 1 << 1
	msrHVVPRuntime    = 0x40000010
	msrHVTimeRefCount = 0x40000020
)

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestVMStateSaveRestore raises IRQ lines (PIC and IOAPIC state), loads
// the PIT through KVM_SET_PIT2 and moves the clock, saves the VM state,
// restores it into a second VM and saves that.
func TestVMStateSaveRestore(t *testing.T) {
	s := openOrSkip(t)
	src, _ := stateVM(t, s, nil)
	fresh, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	for _, irq := range []uint32{4, 10} {
		if err := src.IRQLine(irq, true); err != nil {
			t.Fatal(err)
		}
	}
	pit := fresh.PIT
	pit.Channels[2] = PITChannelState{Count: 0x1234, Mode: 3, RWMode: 3, ReadState: 3, WriteState: 3}
	pit.Flags = PITFlagSpeakerDataOn
	if err := src.setFixed(kvmSetPIT2, &pit); err != nil {
		t.Fatal(err)
	}
	const clockNS = 1000e9
	if err := src.setFixed(kvmSetClock, &ClockData{Clock: clockNS}); err != nil {
		t.Fatal(err)
	}
	saved, err := src.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if saved.PICMaster.IRR&(1<<4) == 0 || saved.PICSlave.IRR&(1<<2) == 0 {
		t.Errorf("raised IRQs 4 and 10 not in the PIC IRRs: master %+v slave %+v", saved.PICMaster, saved.PICSlave)
	}
	if saved.PICMaster == fresh.PICMaster || saved.PIT.Channels[2].Count != 0x1234 || saved.Clock.Clock < clockNS {
		t.Fatalf("state did not change: PIC %+v, PIT channel 2 %+v, clock %d", saved.PICMaster, saved.PIT.Channels[2], saved.Clock.Clock)
	}
	enc, err := saved.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var decoded VMState
	if err := decoded.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	dst, _ := stateVM(t, s, nil)
	if err := dst.RestoreState(&decoded); err != nil {
		t.Fatal(err)
	}
	got, err := dst.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if got.PICMaster != saved.PICMaster || got.PICSlave != saved.PICSlave {
		t.Errorf("PICs after restore %+v %+v, want %+v %+v", got.PICMaster, got.PICSlave, saved.PICMaster, saved.PICSlave)
	}
	if got.IOAPIC != saved.IOAPIC {
		t.Errorf("IOAPIC after restore %+v, want %+v", got.IOAPIC, saved.IOAPIC)
	}
	for i := range got.PIT.Channels {
		g, w := got.PIT.Channels[i], saved.PIT.Channels[i]
		g.CountLoadTime, w.CountLoadTime = 0, 0 // KVM reloads counters at the time of the set
		if g != w {
			t.Errorf("PIT channel %d after restore %+v, want %+v", i, g, w)
		}
	}
	if got.PIT.Flags != saved.PIT.Flags {
		t.Errorf("PIT flags after restore %#x, want %#x", got.PIT.Flags, saved.PIT.Flags)
	}
	if got.Clock.Clock < saved.Clock.Clock || got.Clock.Clock-saved.Clock.Clock > 60e9 {
		t.Errorf("clock after restore %d ns, saved %d: backwards or more than 60 s on", got.Clock.Clock, saved.Clock.Clock)
	}
}

// realModeIOGuest is: mov dx,0x71; in al,dx; out 0x80,al; hlt.
var realModeIOGuest = []byte{0xba, 0x71, 0x00, 0xec, 0xe6, 0x80, 0xf4}

const realModeIOGuestAt = 0x1000

func startRealMode(t *testing.T, v *VCPU) {
	t.Helper()
	sr, err := v.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := v.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	if err := v.SetRegs(Regs{RIP: realModeIOGuestAt, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
}

func guestMem(t *testing.T) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	return mem
}

// runToIn runs the guest to its IN exit and answers 0x42.
func runToIn(t *testing.T, v *VCPU) {
	t.Helper()
	if err := v.Run(); err != nil {
		t.Fatal(err)
	}
	io, err := v.IO()
	if err != nil {
		t.Fatal(err)
	}
	if r := v.ExitReason(); r != ExitIO || io.Out || io.Port != 0x71 || io.Size != 1 {
		t.Fatalf("first exit %v %+v, want an IN from port 0x71", r, io)
	}
	io.Data[0] = 0x42
}

// TestCompletePendingIO: after an IN exit is answered, the data reaches AL
// only on the next KVM_RUN; CompletePendingIO makes that happen without
// running the guest further, and leaves immediate_exit as it found it.
func TestCompletePendingIO(t *testing.T) {
	s := openOrSkip(t)
	mem := guestMem(t)
	copy(mem[realModeIOGuestAt:], realModeIOGuest)
	_, v := stateVM(t, s, mem)
	startRealMode(t, v)
	runToIn(t, v)
	if r, err := v.Regs(); err != nil || r.RAX&0xff == 0x42 {
		t.Fatalf("AL already %#x before completion (%v): the test shows nothing", r.RAX&0xff, err)
	}
	if err := v.CompletePendingIO(); err != nil {
		t.Fatalf("CompletePendingIO: %v", err)
	}
	r, err := v.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if r.RAX&0xff != 0x42 || r.RIP != realModeIOGuestAt+4 {
		t.Fatalf("after CompletePendingIO AL=%#x RIP=%#x, want 0x42 at %#x", r.RAX&0xff, r.RIP, realModeIOGuestAt+4)
	}
	if immediateExitOn(v.run) {
		t.Fatal("CompletePendingIO left immediate_exit set")
	}
	// A Kick in effect stays in effect.
	v.Kick()
	if err := v.CompletePendingIO(); err != nil {
		t.Fatalf("CompletePendingIO with nothing pending, kicked: %v", err)
	}
	if !immediateExitOn(v.run) {
		t.Fatal("CompletePendingIO cleared a Kick")
	}
	v.ClearKick()
	if err := v.Run(); err != nil {
		t.Fatal(err)
	}
	io, err := v.IO()
	if err != nil {
		t.Fatal(err)
	}
	if v.ExitReason() != ExitIO || !io.Out || io.Port != 0x80 || io.Data[0] != 0x42 {
		t.Fatalf("next exit %v %+v, want OUT 0x42 to port 0x80", v.ExitReason(), io)
	}
}

// TestSnapshotRealModeGuest stops a guest at an IN exit, snapshots it
// (memory copied, VM and vCPU state through their encodings) and resumes
// it in a second VM: the value the first VM's IN read comes out of the
// second's OUT.
func TestSnapshotRealModeGuest(t *testing.T) {
	s := openOrSkip(t)
	msrList, err := s.MSRIndexList()
	if err != nil {
		t.Fatal(err)
	}
	mem := guestMem(t)
	copy(mem[realModeIOGuestAt:], realModeIOGuest)
	srcVM, src := stateVM(t, s, mem)
	if err := src.SetCPUID(guestCPUID(t, s)); err != nil {
		t.Fatal(err)
	}
	startRealMode(t, src)
	runToIn(t, src)
	if err := src.CompletePendingIO(); err != nil {
		t.Fatal(err)
	}
	vs, err := src.SaveState(msrList)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := srcVM.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	vsEnc, err := vs.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	msEnc, err := ms.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}

	mem2 := guestMem(t)
	copy(mem2, mem)
	dstVM, dst := stateVM(t, s, mem2)
	var vs2 VCPUState
	var ms2 VMState
	if err := vs2.UnmarshalBinary(vsEnc); err != nil {
		t.Fatal(err)
	}
	if err := ms2.UnmarshalBinary(msEnc); err != nil {
		t.Fatal(err)
	}
	if err := CheckCPUID(vs2.CPUID, mustSupported(t, s)); err != nil {
		t.Fatal(err)
	}
	if err := dstVM.RestoreState(&ms2); err != nil {
		t.Fatal(err)
	}
	if err := dst.RestoreState(&vs2); err != nil {
		t.Fatal(err)
	}
	if err := dst.Run(); err != nil {
		t.Fatal(err)
	}
	io, err := dst.IO()
	if err != nil {
		t.Fatal(err)
	}
	if dst.ExitReason() != ExitIO || !io.Out || io.Port != 0x80 || io.Data[0] != 0x42 {
		t.Fatalf("restored guest's first exit %v %+v, want OUT 0x42 to port 0x80", dst.ExitReason(), io)
	}
}

func mustSupported(t *testing.T, s *System) []CPUIDEntry {
	t.Helper()
	sup, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	return sup
}

// TestSaveStateSkipsUnreadableMSRs: indices KVM_GET_MSRS cannot read, at
// the start, middle and end of the list, are left out and the rest read.
func TestSaveStateSkipsUnreadableMSRs(t *testing.T) {
	s := openOrSkip(t)
	_, v := stateVM(t, s, nil)
	if err := v.SetCPUID(guestCPUID(t, s)); err != nil {
		t.Fatal(err)
	}
	want := []MSR{{MSRSTAR, 0x0023001000000000}, {MSRKernelGSBase, 0xffff888000abc000}}
	if err := v.SetMSRs(want); err != nil {
		t.Fatal(err)
	}
	const bogus = 0x4b4d0fff // in no MSR range KVM emulates
	st, err := v.SaveState([]uint32{bogus, MSRSTAR, bogus + 1, MSRKernelGSBase, bogus + 2})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st.MSRs, want) {
		t.Fatalf("saved MSRs %#x, want %#x", st.MSRs, want)
	}
}

// TestRestoreEarlyTSC: a TSC saved less than a second of cycles after the
// source VM started must come back as saved, not restart with the new VM
// (KVM before 6.7 takes such a write for a vCPU synchronization).
func TestRestoreEarlyTSC(t *testing.T) {
	s := openOrSkip(t)
	_, v := stateVM(t, s, nil)
	khz, err := ioctl(v.fd, kvmGetTSCKHz, 0)
	if err != nil || khz == 0 {
		t.Skipf("no TSC frequency: %v", err)
	}
	if err := v.SetCPUID(guestCPUID(t, s)); err != nil {
		t.Fatal(err)
	}
	// A KVM that does not honour the VMM's TSC writes at all (a nested
	// kvm_pvm gives the guest its host's TSC) cannot pass this; a TSC
	// far from any the host has is no synchronization candidate, so
	// every hardware KVM takes it as written.
	_, probe := stateVM(t, s, nil)
	far := uint64(1) << 62
	if err := probe.SetMSRs([]MSR{{MSRIA32TSC, far}}); err != nil {
		t.Fatal(err)
	}
	if got, err := probe.MSRs([]uint32{MSRIA32TSC}); err != nil {
		t.Fatal(err)
	} else if got[0].Data < far {
		t.Skipf("skipping: this KVM ignores the VMM's TSC writes (wrote %#x, read %#x): a nested KVM such as kvm_pvm", far, got[0].Data)
	}
	saved := uint64(khz) * 1000 / 2 // half a second of TSC
	st, err := v.SaveState([]uint32{MSRIA32TSC})
	if err != nil {
		t.Fatal(err)
	}
	st.MSRs = []MSR{{MSRIA32TSC, saved}}
	_, w := stateVM(t, s, nil)
	if err := w.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	got, err := w.MSRs([]uint32{MSRIA32TSC})
	if err != nil {
		t.Fatal(err)
	}
	if tsc := got[0].Data; tsc < saved || tsc > saved+uint64(khz)*1000 {
		t.Errorf("restored TSC %d, want %d or a little more (TSC at %d kHz)", tsc, saved, khz)
	}
}

// TestSaveStateCPUIDIsWhatWasSet: the saved CPUID is what SetCPUID gave the
// vCPU, so a restore on the same host accepts it (CheckCPUID). A nested
// KVM (kvm_pvm) reads back its host's leaves with KVM_GET_CPUID2 whatever
// was set: a snapshot of those was refused by every restore there, and
// each warm `corral exec` booted and snapshotted again.
func TestSaveStateCPUIDIsWhatWasSet(t *testing.T) {
	s := openOrSkip(t)
	supported, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	_, v := stateVM(t, s, nil)
	set := guestCPUID(t, s)
	if err := v.SetCPUID(set); err != nil {
		t.Fatal(err)
	}
	st, err := v.SaveState(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st.CPUID, set) {
		t.Errorf("saved CPUID differs from the %d leaves set (%d saved)", len(set), len(st.CPUID))
	}
	if err := CheckCPUID(st.CPUID, supported); err != nil {
		t.Errorf("the saved CPUID would be refused on this host: %v", err)
	}
}
