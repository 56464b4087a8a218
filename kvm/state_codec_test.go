package kvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sampleVCPUState returns a state with a distinct value in every field
// class, and an XSAVE area larger than struct kvm_xsave (as KVM_GET_XSAVE2
// gives with AMX).
func sampleVCPUState() *VCPUState {
	s := &VCPUState{
		CPUID: []CPUIDEntry{
			{Function: 0, EAX: 0xd, EBX: 0x68747541},
			{Function: 7, Index: 0, Flags: CPUIDFlagSignificantIndex, EBX: 0x219c07ab, ECX: 0x10},
		},
		Regs:      Regs{RAX: 0x1111, RBX: 0x2222, R15: 0xf0f0, RIP: 0xffffffff81000000, RFLAGS: 0x246},
		XCRs:      []XCR{{Index: 0, Value: 0x7}},
		DebugRegs: DebugRegs{DB: [4]uint64{0x1000, 0x2000, 0, 0}, DR6: 0xffff0ff0, DR7: 0x401},
		MSRs:      []MSR{{MSRIA32TSC, 123456789}, {MSRKernelGSBase, 0xffff888012345678}, {MSRIA32TSCDeadline, 0}},
		Events: VCPUEvents{ExceptionNr: 14, ExceptionHasErrorCode: 1, ExceptionErrorCode: 2, NMIMasked: 1,
			SIPIVector: 0x9a, Flags: VCPUEventValidNMIPending | VCPUEventValidSIPIVector | VCPUEventValidShadow,
			ExceptionPayload: 0xdead0000},
		MPState: MPStateHalted,
		TSCKHz:  2994374,
	}
	s.Sregs.CS = Segment{Base: 0, Limit: 0xffffffff, Selector: 0x10, Type: 11, Present: 1, S: 1, L: 1, G: 1}
	s.Sregs.GDT = DTable{Base: 0x500, Limit: 0x27}
	s.Sregs.CR0, s.Sregs.CR3, s.Sregs.CR4, s.Sregs.EFER = 0x80050033, 0x1000, 0x3506f0, 0xd01
	s.Sregs.APICBase = 0xfee00900
	s.LAPIC.Set(LAPICRegID, 3<<24)
	s.LAPIC.Set(0x80, 0x20) // TPR
	s.XSAVE = make([]byte, 11008)
	for i := range s.XSAVE {
		s.XSAVE[i] = byte(i * 7)
	}
	return s
}

func sampleVMState() *VMState {
	s := &VMState{
		PICMaster: PICState{IRR: 0x10, IMR: 0xf8, IRQBase: 0x20, InitState: 0, ELCRMask: 0xf8, AutoEOI: 1},
		PICSlave:  PICState{IMR: 0xff, IRQBase: 0x28, ELCR: 0x0c, ELCRMask: 0xde},
		IOAPIC:    IOAPICState{BaseAddress: 0xfec00000, IOREGSEL: 0x10, ID: 2, IRR: 1 << 4},
		Clock:     ClockData{Clock: 987654321000, Flags: ClockFlagTSCStable | ClockFlagRealtime, Realtime: 1700000000e9, HostTSC: 42},
	}
	for i := range s.IOAPIC.Redirtbl {
		s.IOAPIC.Redirtbl[i] = 1<<16 | uint64(0x30+i)
	}
	s.PIT.Channels[0] = PITChannelState{Count: 0x10000, Mode: 2, RWMode: 3, ReadState: 3, WriteState: 3, Gate: 1, CountLoadTime: 5e9}
	s.PIT.Channels[1] = PITChannelState{Count: 0x10000, Mode: pitModeUnset} // as KVM resets it
	s.PIT.Channels[2] = PITChannelState{Count: 0x1234, Mode: 3, RWMode: 3, ReadState: 4, WriteState: 4}
	s.PIT.Flags = PITFlagSpeakerDataOn
	return s
}

// TestStateStructSizes checks that the encoding/binary layouts of the
// state structures are the kernel's sizes (abi_unsafe_test.go checks those
// against the C headers), so the offsets in state_codec.go hold.
func TestStateStructSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		v    any
		want int
	}{
		{"Regs", Regs{}, regsSize}, {"Sregs", Sregs{}, sregsSize}, {"LAPICState", LAPICState{}, lapicSize},
		{"DebugRegs", DebugRegs{}, debugRegsSize}, {"VCPUEvents", VCPUEvents{}, vcpuEventsSize},
		{"PICState", PICState{}, picStateSize}, {"IOAPICState", IOAPICState{}, ioapicStateSize},
		{"PITChannelState", PITChannelState{}, pitChannelSize}, {"PITState", PITState{}, pitStateSize},
		{"ClockData", ClockData{}, clockDataSize},
	} {
		if got := binary.Size(c.v); got != c.want {
			t.Errorf("binary.Size(%s) = %d, want %d", c.name, got, c.want)
		}
	}
	if vcpuFixedSize != 1712 || vmStateSize != 424 {
		t.Errorf("fixed sizes %d and %d differ from the documented 1712 and 424", vcpuFixedSize, vmStateSize)
	}
}

func TestVCPUStateRoundTrip(t *testing.T) {
	s := sampleVCPUState()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got VCPUState
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, s) {
		t.Fatalf("round trip changed the state:\n got %+v\nwant %+v", got, *s)
	}
	b2, err := got.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, b2) {
		t.Error("re-encoding a decoded state gave different bytes")
	}
	// Field offsets are the documented ones.
	le := binary.LittleEndian
	if le.Uint64(b[vcpuOffRegs:]) != 0x1111 || le.Uint64(b[vcpuOffRegs+16*8:]) != 0xffffffff81000000 {
		t.Error("RAX or RIP not at the documented offsets")
	}
	if le.Uint32(b[vcpuOffXSAVELen:]) != 11008 || b[len(b)-1] != byte(11007*7%256) {
		t.Error("XSAVE length or area not where documented")
	}
}

func TestVMStateRoundTrip(t *testing.T) {
	s := sampleVMState()
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != vmStateSize {
		t.Fatalf("encoded %d bytes, want %d", len(b), vmStateSize)
	}
	var got VMState
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if got != *s {
		t.Fatalf("round trip changed the state:\n got %+v\nwant %+v", got, *s)
	}
	if binary.LittleEndian.Uint64(b[vmOffClock:]) != 987654321000 || b[vmOffPICMaster+2] != 0xf8 {
		t.Error("clock or PIC IMR not at the documented offsets")
	}
}

// Every strict prefix of a valid encoding, and every corruption below, is
// an ErrBadState naming what is wrong, never a panic.
func TestVCPUStateUnmarshalRejects(t *testing.T) {
	good, err := sampleVCPUState().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(good); n++ {
		var s VCPUState
		if err := s.UnmarshalBinary(good[:n]); !errors.Is(err, ErrBadState) {
			t.Fatalf("truncated to %d bytes: %v, want ErrBadState", n, err)
		}
	}
	put32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	for _, c := range []struct {
		name, want string
		mut        func([]byte) []byte
	}{
		{"magic", "magic", func(b []byte) []byte { b[0] = 'X'; return b }},
		{"version", "format version 2", put32(vcpuOffVersion, 2)},
		{"cpuid count", "CPUID entry count 257", put32(vcpuOffNCPUID, 257)},
		{"msr count", "MSR count 4097", put32(vcpuOffNMSR, 4097)},
		{"msr count huge", "MSR count 4294967295", put32(vcpuOffNMSR, 0xffffffff)},
		{"xcr count", "XCR count 17", put32(vcpuOffNXCR, 17)},
		{"xsave short", "XSAVE length 4095", put32(vcpuOffXSAVELen, 4095)},
		{"xsave huge", "XSAVE length 1048577", put32(vcpuOffXSAVELen, 1<<20+1)},
		{"count mismatch", "need", put32(vcpuOffNMSR, 2)},
		{"reserved", "reserved word", put32(vcpuOffReserved, 1)},
		{"trailing", "need", func(b []byte) []byte { return append(b, 0) }},
		{"mp state", "MP state 11", put32(vcpuOffMPState, 11)},
		{"debugregs flags", "debug registers flags", put32(vcpuOffDebugRegs+48, 1)},
		{"events flags", "events flags 0x47", put32(vcpuOffEvents+20, 0x47)},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := c.mut(bytes.Clone(good))
			s := VCPUState{TSCKHz: 77}
			err := s.UnmarshalBinary(b)
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrBadState mentioning %q", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("multi-line error %q", err)
			}
			if s.TSCKHz != 77 {
				t.Error("a failed UnmarshalBinary changed the state")
			}
		})
	}
}

func TestVMStateUnmarshalRejects(t *testing.T) {
	good, err := sampleVMState().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(good); n++ {
		var s VMState
		if err := s.UnmarshalBinary(good[:n]); !errors.Is(err, ErrBadState) {
			t.Fatalf("truncated to %d bytes: %v, want ErrBadState", n, err)
		}
	}
	ch := func(i, field int) int { return vmOffPIT + i*pitChannelSize + field }
	for _, c := range []struct {
		name, want string
		mut        func([]byte) []byte
	}{
		{"magic", "magic", func(b []byte) []byte { b[7] = 1; return b }},
		{"version", "format version 0", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[vmOffVersion:], 0); return b }},
		{"reserved", "reserved word", func(b []byte) []byte { b[vmOffReserved] = 1; return b }},
		{"trailing", "425 bytes", func(b []byte) []byte { return append(b, 0) }},
		{"pit count", "PIT channel 1 count 0x10001", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[ch(1, 0):], 0x10001)
			return b
		}},
		{"pit mode", "PIT channel 2 mode 6", func(b []byte) []byte { b[ch(2, 13)] = 6; return b }},
		{"pit mode 0xfe", "PIT channel 1 mode 254", func(b []byte) []byte { b[ch(1, 13)] = 0xfe; return b }},
		{"pit rw_mode", "PIT channel 0 rw_mode 4", func(b []byte) []byte { b[ch(0, 12)] = 4; return b }},
		{"pit read_state", "PIT channel 0 read_state 5", func(b []byte) []byte { b[ch(0, 9)] = 5; return b }},
		{"pit write_state", "PIT channel 0 write_state 9", func(b []byte) []byte { b[ch(0, 10)] = 9; return b }},
		{"pit flags", "PIT flags 0x6", func(b []byte) []byte { b[vmOffPIT+72] = 6; return b }},
		{"clock flags", "clock flags 0x7", func(b []byte) []byte { b[vmOffClock+8] = 7; return b }},
	} {
		t.Run(c.name, func(t *testing.T) {
			var s VMState
			err := s.UnmarshalBinary(c.mut(bytes.Clone(good)))
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want ErrBadState mentioning %q", err, c.want)
			}
		})
	}
}

func TestVCPUStateMarshalRefusesOutOfBounds(t *testing.T) {
	for name, mut := range map[string]func(*VCPUState){
		"xsave short": func(s *VCPUState) { s.XSAVE = s.XSAVE[:100] },
		"many xcrs":   func(s *VCPUState) { s.XCRs = make([]XCR, 17) },
		"many msrs":   func(s *VCPUState) { s.MSRs = make([]MSR, maxMSRs+1) },
		"many cpuid":  func(s *VCPUState) { s.CPUID = make([]CPUIDEntry, 257) },
		"mp state":    func(s *VCPUState) { s.MPState = 11 },
		"events":      func(s *VCPUState) { s.Events.Flags |= 0x40 },
	} {
		s := sampleVCPUState()
		mut(s)
		if _, err := s.MarshalBinary(); err == nil {
			t.Errorf("%s: MarshalBinary accepted a state UnmarshalBinary would refuse", name)
		}
	}
	vs := sampleVMState()
	vs.PIT.Channels[1].Mode = 7
	if _, err := vs.MarshalBinary(); !errors.Is(err, ErrBadState) {
		t.Errorf("VM state with PIT mode 7: MarshalBinary gave %v, want ErrBadState", err)
	}
}

func TestOrderMSRs(t *testing.T) {
	early, late := orderMSRs([]MSR{{MSRSTAR, 1}, {MSRIA32TSCDeadline, 2}, {MSRKernelGSBase, 3}, {MSRIA32TSC, 4}})
	if len(early) != 3 || early[0].Index != MSRIA32TSC || early[1].Index != MSRSTAR || early[2].Index != MSRKernelGSBase {
		t.Errorf("early MSRs %+v, want TSC first then the rest in order", early)
	}
	if len(late) != 1 || late[0].Index != MSRIA32TSCDeadline {
		t.Errorf("late MSRs %+v, want TSC_DEADLINE", late)
	}
}

// stateCodec is a state type whose pointer has the binary codec.
type stateCodec[T any] interface {
	*T
	MarshalBinary() ([]byte, error)
	UnmarshalBinary([]byte) error
}

// fuzzRoundTrip checks one fuzz input: UnmarshalBinary never panics, its
// errors wrap ErrBadState, and what it accepts survives MarshalBinary and
// UnmarshalBinary unchanged.
func fuzzRoundTrip[T any, P stateCodec[T]](t *testing.T, b []byte) {
	var s T
	if err := P(&s).UnmarshalBinary(b); err != nil {
		if !errors.Is(err, ErrBadState) {
			t.Fatalf("error %v does not wrap ErrBadState", err)
		}
		return
	}
	enc, err := P(&s).MarshalBinary()
	if err != nil {
		t.Fatalf("MarshalBinary of an accepted state: %v", err)
	}
	var s2 T
	if err := P(&s2).UnmarshalBinary(enc); err != nil {
		t.Fatalf("UnmarshalBinary of a re-encoded state: %v", err)
	}
	if !reflect.DeepEqual(s, s2) {
		t.Fatal("state changed through MarshalBinary and UnmarshalBinary")
	}
}

// FuzzVCPUStateUnmarshal: fuzzRoundTrip for the vCPU state.
func FuzzVCPUStateUnmarshal(f *testing.F) {
	if b, err := sampleVCPUState().MarshalBinary(); err == nil {
		f.Add(b)
	}
	f.Fuzz(fuzzRoundTrip[VCPUState])
}

// FuzzVMStateUnmarshal: fuzzRoundTrip for the VM state.
func FuzzVMStateUnmarshal(f *testing.F) {
	if b, err := sampleVMState().MarshalBinary(); err == nil {
		f.Add(b)
	}
	f.Fuzz(fuzzRoundTrip[VMState])
}

func TestClockAdvance(t *testing.T) {
	c := ClockData{Clock: 1000, Flags: ClockFlagRealtime, Realtime: 5000}
	if d := c.Advance(7500); d != 2500 || c.Clock != 3500 {
		t.Errorf("Advance(7500): %v, clock %d; want 2.5µs and 3500", d, c.Clock)
	}
	back := ClockData{Clock: 1000, Flags: ClockFlagRealtime, Realtime: 5000}
	if d := back.Advance(4000); d != 0 || back.Clock != 1000 {
		t.Errorf("a host clock set back moved the guest's: %v, %d", d, back.Clock)
	}
	none := ClockData{Clock: 1000, Realtime: 5000}
	if d := none.Advance(9000); d != 0 || none.Clock != 1000 {
		t.Errorf("without KVM_CLOCK_REALTIME the clock moved: %v, %d", d, none.Clock)
	}
}
