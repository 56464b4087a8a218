package kvm

import (
	"errors"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv/require"
	"golang.org/x/sys/unix"
)

// openOrSkip opens /dev/kvm, or skips the test saying why (fails it with
// CORRAL_REQUIRE=kvm). It is testenv.MustHaveKVM, which this package's
// tests cannot import (testenv imports kvm).
func openOrSkip(t *testing.T) *System {
	t.Helper()
	s, err := Open("")
	if errors.Is(err, ErrUnavailable) {
		require.Missing(t, require.KVM, "needs %s: %v", DevicePath, err)
	}
	if err != nil {
		t.Fatalf("KVM is present but Corral cannot use it: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOpenMissingDevice(t *testing.T) {
	_, err := Open("/nonexistent/kvm")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open of a missing device: %v, want ErrUnavailable", err)
	}
}

func TestSupportedCPUIDAndMSRs(t *testing.T) {
	s := openOrSkip(t)
	ids, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) == 0 || ids[0].Function != 0 {
		t.Fatalf("unexpected CPUID list: %d entries", len(ids))
	}
	msrs, err := s.MSRIndexList()
	if err != nil {
		t.Fatal(err)
	}
	if len(msrs) == 0 {
		t.Fatal("empty MSR index list")
	}
}

// TestRealModeGuest runs a few real-mode instructions that write to an I/O
// port and then issue an MMIO read, checking the exits KVM reports.
func TestRealModeGuest(t *testing.T) {
	s := openOrSkip(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetUserMemoryRegion(0, 0, mem); err != nil {
		t.Fatal(err)
	}
	// mov dx,0x3f8; mov al,'K'; out dx,al; mov ax,[0x8000]... use an
	// address outside RAM: mov bx,0xf000; mov ds,bx; mov al,[0]; hlt
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'K', // mov al, 'K'
		0xee,             // out dx, al
		0xbb, 0x00, 0xf0, // mov bx, 0xf000
		0x8e, 0xdb, // mov ds, bx
		0xa0, 0x00, 0x00, // mov al, [0]   -> linear 0xf0000, outside RAM: MMIO exit
		0xf4, // hlt
	}
	copy(mem[0x1000:], code)
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	sr, err := v.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := v.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	if err := v.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	if err := v.Run(); err != nil {
		t.Fatal(err)
	}
	if r := v.ExitReason(); r != ExitIO {
		t.Fatalf("first exit %v, want KVM_EXIT_IO", r)
	}
	io, err := v.IO()
	if err != nil {
		t.Fatal(err)
	}
	if !io.Out || io.Port != 0x3f8 || io.Size != 1 || string(io.Data) != "K" {
		t.Fatalf("IO exit %+v", io)
	}
	if err := v.Run(); err != nil {
		t.Fatal(err)
	}
	if r := v.ExitReason(); r != ExitMMIO {
		t.Fatalf("second exit %v, want KVM_EXIT_MMIO", r)
	}
	mm := v.MMIO()
	if mm.IsWrite || mm.Addr != 0xf0000 || len(mm.Data) != 1 {
		t.Fatalf("MMIO exit %+v", mm)
	}
	mm.Data[0] = 0x5a
	if err := v.Run(); err != nil {
		t.Fatal(err)
	}
	if r := v.ExitReason(); r != ExitHLT {
		t.Fatalf("third exit %v, want KVM_EXIT_HLT", r)
	}
	regs, err := v.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if regs.RAX&0xff != 0x5a {
		t.Errorf("AL = %#x after the MMIO read, want 0x5a", regs.RAX&0xff)
	}
}

// TestKickInterruptsRun checks that Kick before Run makes it return at once.
func TestKickInterruptsRun(t *testing.T) {
	s := openOrSkip(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	v.Kick()
	if err := v.Run(); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run after Kick: %v, want ErrInterrupted", err)
	}
	v.ClearKick()
}

func TestIRQChipRoutingAndEventFDs(t *testing.T) {
	s := openOrSkip(t)
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	if err := vm.CreateIRQChip(); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(); err != nil {
		t.Fatal(err)
	}
	routes := append(DefaultIRQChipRoutes(), Route{GSI: 24, IsMSI: true, MSIAddr: 0xfee00000, MSIData: 0x30})
	if err := vm.SetGSIRouting(routes); err != nil {
		t.Fatal(err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	if err := vm.IRQFD(efd, 24, false); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQFD(efd, 24, true); err != nil {
		t.Fatal(err)
	}
	dm := uint64(3)
	ev := IOEvent{Addr: 0xd0000000, Len: 2, FD: efd, Datamatch: &dm}
	if err := vm.IOEventFD(ev, false); err != nil {
		t.Fatal(err)
	}
	if err := vm.IOEventFD(ev, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, false); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.SignalMSI(0xfee00000, 0x31); err != nil {
		t.Fatal(err)
	}
}

func TestGuestCPUIDTopology(t *testing.T) {
	sup := []CPUIDEntry{
		{Function: 0, EAX: 0xd},
		{Function: 1, EBX: 0xff000800, ECX: 0, EDX: 0},
		{Function: 0xa, EAX: 0x07300403},
		{Function: 0xb, Index: 0, Flags: CPUIDFlagSignificantIndex}, // KVM may list sub-leaf 0 only
		{Function: 0x80000007, EDX: 1<<8 | 1<<9},
	}
	got := GuestCPUID(sup, 3, Topology{CPUs: 4})
	find := func(fn, idx uint32) CPUIDEntry {
		for _, e := range got {
			if e.Function == fn && e.Index == idx {
				return e
			}
		}
		t.Fatalf("leaf %#x.%d missing", fn, idx)
		return CPUIDEntry{}
	}
	l1 := find(1, 0)
	if l1.EBX>>24 != 3 || (l1.EBX>>16)&0xff != 4 || l1.ECX>>31 != 1 || l1.EDX&(1<<28) == 0 {
		t.Errorf("leaf 1 = %+v", l1)
	}
	if l := find(0xa, 0); l.EAX != 0 {
		t.Errorf("PMU leaf not cleared: %+v", l)
	}
	if l := find(0xb, 0); l.EAX != 0 || l.EBX != 1 || l.ECX != 1<<8 || l.EDX != 3 {
		t.Errorf("leaf 0xb.0 = %+v", l)
	}
	if l := find(0xb, 1); l.EAX != 2 || l.EBX != 4 || l.ECX != 2<<8|1 || l.EDX != 3 {
		t.Errorf("leaf 0xb.1 = %+v", l)
	}
	if l := find(0xb, 2); l.ECX != 2 || l.EBX != 0 {
		t.Errorf("leaf 0xb.2 = %+v", l)
	}
	if l := find(0x80000007, 0); l.EDX != 1<<9 {
		t.Errorf("leaf 0x80000007 EDX = %#x, want the invariant TSC (bit 8) cleared and the rest kept", l.EDX)
	}
	if l := find(0x40000000, 0); l.EBX != 0x4b4d564b {
		t.Errorf("hypervisor leaf = %+v", l)
	}
	if sup[1].EBX != 0xff000800 || sup[4].EDX != 1<<8|1<<9 {
		t.Error("GuestCPUID modified its input")
	}
}

func TestBootMSRsOnlySupported(t *testing.T) {
	got := BootMSRs([]uint32{MSRSTAR, MSRIA32MiscEnable, 0x10a})
	if len(got) != 2 {
		t.Fatalf("BootMSRs = %+v, want STAR and MISC_ENABLE only", got)
	}
}
