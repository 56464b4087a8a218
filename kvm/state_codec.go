package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadState is wrapped by UnmarshalBinary's errors: the saved state is
// corrupt, truncated, or of a format version this build does not read.
var ErrBadState = errors.New("kvm: bad saved state")

// Bounds on the variable parts of a saved vCPU state, far above what KVM
// gives, so a corrupt length cannot make UnmarshalBinary allocate much.
const (
	maxMSRs      = 4096
	maxXSAVESize = 1 << 20
)

// vCPU state format, version 1, little-endian. A fixed part:
//
//	0    magic "CRLVCPU\x00"
//	8    version (1)
//	12   TSC kHz
//	16   MP state
//	20   number of CPUID entries (at most 256)
//	24   number of MSRs (at most 4096)
//	28   number of XCRs (at most 16)
//	32   XSAVE area length (4096 .. 1 MiB)
//	36   reserved, 0
//	40   struct kvm_regs (144)
//	184  struct kvm_sregs (312)
//	496  struct kvm_lapic_state (1024)
//	1520 struct kvm_debugregs (128)
//	1648 struct kvm_vcpu_events (64)
//	1712 end of fixed part
//
// then the CPUID entries (28 bytes each: function, index, flags, EAX, EBX,
// ECX, EDX), the MSRs (12 bytes: index u32, value u64), the XCRs (12 bytes:
// index u32, value u64) and the XSAVE area, and nothing after it.
const (
	vcpuStateVersion = 1
	vcpuOffMagic     = 0
	vcpuOffVersion   = 8
	vcpuOffTSCKHz    = 12
	vcpuOffMPState   = 16
	vcpuOffNCPUID    = 20
	vcpuOffNMSR      = 24
	vcpuOffNXCR      = 28
	vcpuOffXSAVELen  = 32
	vcpuOffReserved  = 36
	vcpuOffRegs      = 40
	vcpuOffSregs     = vcpuOffRegs + regsSize
	vcpuOffLAPIC     = vcpuOffSregs + sregsSize
	vcpuOffDebugRegs = vcpuOffLAPIC + lapicSize
	vcpuOffEvents    = vcpuOffDebugRegs + debugRegsSize
	vcpuFixedSize    = vcpuOffEvents + vcpuEventsSize

	cpuidRecSize = 28
	msrRecSize   = 12
	xcrRecSize   = 12
)

var vcpuMagic = [8]byte{'C', 'R', 'L', 'V', 'C', 'P', 'U', 0}

// VM state format, version 1, little-endian, fixed size:
//
//	0   magic "CRLVMST\x00"
//	8   version (1)
//	12  reserved, 0
//	16  struct kvm_pic_state, master (16)
//	32  struct kvm_pic_state, slave (16)
//	48  struct kvm_ioapic_state (216)
//	264 struct kvm_pit_state2 (112)
//	376 struct kvm_clock_data (48)
//	424 end
const (
	vmStateVersion  = 1
	vmOffMagic      = 0
	vmOffVersion    = 8
	vmOffReserved   = 12
	vmOffPICMaster  = 16
	vmOffPICSlave   = vmOffPICMaster + picStateSize
	vmOffIOAPIC     = vmOffPICSlave + picStateSize
	vmOffPIT        = vmOffIOAPIC + ioapicStateSize
	vmOffClock      = vmOffPIT + pitStateSize
	vmStateSize     = vmOffClock + clockDataSize
	pitMaxCount     = 0x10000
	pitMaxMode      = 5
	pitModeUnset    = 0xff // KVM's mode for a channel the guest never programmed
	pitMaxRWMode    = 3
	pitMaxRWState   = 4 // RW_STATE_WORD1
	pitMaxReadState = pitMaxRWState
)

var vmMagic = [8]byte{'C', 'R', 'L', 'V', 'M', 'S', 'T', 0}

func badState(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadState, fmt.Sprintf(format, args...))
}

// MarshalBinary encodes the state in the versioned format described in
// state_codec.go; it refuses a state UnmarshalBinary would refuse.
func (s *VCPUState) MarshalBinary() ([]byte, error) {
	switch {
	case len(s.CPUID) > maxCPUIDEntries:
		return nil, fmt.Errorf("kvm: vCPU state: %d CPUID entries, at most %d", len(s.CPUID), maxCPUIDEntries)
	case len(s.MSRs) > maxMSRs:
		return nil, fmt.Errorf("kvm: vCPU state: %d MSRs, at most %d", len(s.MSRs), maxMSRs)
	case len(s.XCRs) > maxXCRs:
		return nil, fmt.Errorf("kvm: vCPU state: %d XCRs, at most %d", len(s.XCRs), maxXCRs)
	case len(s.XSAVE) < xsaveLegacySize || len(s.XSAVE) > maxXSAVESize:
		return nil, fmt.Errorf("kvm: vCPU state: XSAVE area of %d bytes, want %d to %d", len(s.XSAVE), xsaveLegacySize, maxXSAVESize)
	}
	if err := s.checkValues(); err != nil {
		return nil, err
	}
	size := vcpuFixedSize + len(s.CPUID)*cpuidRecSize + len(s.MSRs)*msrRecSize + len(s.XCRs)*xcrRecSize + len(s.XSAVE)
	b := make([]byte, size)
	le := binary.LittleEndian
	copy(b[vcpuOffMagic:], vcpuMagic[:])
	le.PutUint32(b[vcpuOffVersion:], vcpuStateVersion)
	le.PutUint32(b[vcpuOffTSCKHz:], s.TSCKHz)
	le.PutUint32(b[vcpuOffMPState:], s.MPState)
	le.PutUint32(b[vcpuOffNCPUID:], uint32(len(s.CPUID)))
	le.PutUint32(b[vcpuOffNMSR:], uint32(len(s.MSRs)))
	le.PutUint32(b[vcpuOffNXCR:], uint32(len(s.XCRs)))
	le.PutUint32(b[vcpuOffXSAVELen:], uint32(len(s.XSAVE)))
	for _, f := range []struct {
		off, size int
		v         any
	}{
		{vcpuOffRegs, regsSize, &s.Regs}, {vcpuOffSregs, sregsSize, &s.Sregs}, {vcpuOffLAPIC, lapicSize, &s.LAPIC},
		{vcpuOffDebugRegs, debugRegsSize, &s.DebugRegs}, {vcpuOffEvents, vcpuEventsSize, &s.Events},
	} {
		if _, err := binary.Encode(b[f.off:f.off+f.size], le, f.v); err != nil {
			return nil, fmt.Errorf("kvm: vCPU state: encode at %d: %w", f.off, err)
		}
	}
	off := vcpuFixedSize
	for _, e := range s.CPUID {
		r := b[off:]
		le.PutUint32(r[0:], e.Function)
		le.PutUint32(r[4:], e.Index)
		le.PutUint32(r[8:], e.Flags)
		le.PutUint32(r[12:], e.EAX)
		le.PutUint32(r[16:], e.EBX)
		le.PutUint32(r[20:], e.ECX)
		le.PutUint32(r[24:], e.EDX)
		off += cpuidRecSize
	}
	for _, m := range s.MSRs {
		le.PutUint32(b[off:], m.Index)
		le.PutUint64(b[off+4:], m.Data)
		off += msrRecSize
	}
	for _, x := range s.XCRs {
		le.PutUint32(b[off:], x.Index)
		le.PutUint64(b[off+4:], x.Value)
		off += xcrRecSize
	}
	copy(b[off:], s.XSAVE)
	return b, nil
}

// UnmarshalBinary decodes a state MarshalBinary encoded, checking every
// length and the values KVM would otherwise be handed blindly; its errors
// wrap ErrBadState and name the field. s is changed only on success.
func (s *VCPUState) UnmarshalBinary(b []byte) error {
	le := binary.LittleEndian
	if len(b) < vcpuOffVersion+4 {
		return badState("vCPU state: %d bytes, shorter than its header", len(b))
	}
	if [8]byte(b[vcpuOffMagic:vcpuOffMagic+8]) != vcpuMagic {
		return badState("vCPU state: magic %q, want %q", b[vcpuOffMagic:vcpuOffMagic+8], vcpuMagic[:])
	}
	if v := le.Uint32(b[vcpuOffVersion:]); v != vcpuStateVersion {
		return badState("vCPU state: format version %d, this build reads %d", v, vcpuStateVersion)
	}
	if len(b) < vcpuFixedSize {
		return badState("vCPU state: %d bytes, fixed part needs %d", len(b), vcpuFixedSize)
	}
	nCPUID := le.Uint32(b[vcpuOffNCPUID:])
	nMSR := le.Uint32(b[vcpuOffNMSR:])
	nXCR := le.Uint32(b[vcpuOffNXCR:])
	xsaveLen := le.Uint32(b[vcpuOffXSAVELen:])
	switch {
	case nCPUID > maxCPUIDEntries:
		return badState("vCPU state: CPUID entry count %d, at most %d", nCPUID, maxCPUIDEntries)
	case nMSR > maxMSRs:
		return badState("vCPU state: MSR count %d, at most %d", nMSR, maxMSRs)
	case nXCR > maxXCRs:
		return badState("vCPU state: XCR count %d, at most %d", nXCR, maxXCRs)
	case xsaveLen < xsaveLegacySize || xsaveLen > maxXSAVESize:
		return badState("vCPU state: XSAVE length %d, want %d to %d", xsaveLen, xsaveLegacySize, maxXSAVESize)
	}
	if r := le.Uint32(b[vcpuOffReserved:]); r != 0 {
		return badState("vCPU state: reserved word %#x, want 0", r)
	}
	// Bounded above, so this cannot overflow.
	want := vcpuFixedSize + int(nCPUID)*cpuidRecSize + int(nMSR)*msrRecSize + int(nXCR)*xcrRecSize + int(xsaveLen)
	if len(b) != want {
		return badState("vCPU state: %d bytes, its counts (%d CPUID, %d MSRs, %d XCRs, XSAVE %d) need %d", len(b), nCPUID, nMSR, nXCR, xsaveLen, want)
	}
	var n VCPUState
	n.TSCKHz = le.Uint32(b[vcpuOffTSCKHz:])
	n.MPState = le.Uint32(b[vcpuOffMPState:])
	for _, f := range []struct {
		name      string
		off, size int
		v         any
	}{
		{"regs", vcpuOffRegs, regsSize, &n.Regs}, {"sregs", vcpuOffSregs, sregsSize, &n.Sregs},
		{"LAPIC", vcpuOffLAPIC, lapicSize, &n.LAPIC}, {"debug registers", vcpuOffDebugRegs, debugRegsSize, &n.DebugRegs},
		{"events", vcpuOffEvents, vcpuEventsSize, &n.Events},
	} {
		if _, err := binary.Decode(b[f.off:f.off+f.size], le, f.v); err != nil {
			return badState("vCPU state: %s: %v", f.name, err)
		}
	}
	if err := n.checkValues(); err != nil {
		return err
	}
	off := vcpuFixedSize
	n.CPUID = make([]CPUIDEntry, nCPUID)
	for i := range n.CPUID {
		r := b[off:]
		n.CPUID[i] = CPUIDEntry{Function: le.Uint32(r[0:]), Index: le.Uint32(r[4:]), Flags: le.Uint32(r[8:]),
			EAX: le.Uint32(r[12:]), EBX: le.Uint32(r[16:]), ECX: le.Uint32(r[20:]), EDX: le.Uint32(r[24:])}
		off += cpuidRecSize
	}
	n.MSRs = make([]MSR, nMSR)
	for i := range n.MSRs {
		n.MSRs[i] = MSR{Index: le.Uint32(b[off:]), Data: le.Uint64(b[off+4:])}
		off += msrRecSize
	}
	n.XCRs = make([]XCR, nXCR)
	for i := range n.XCRs {
		n.XCRs[i] = XCR{Index: le.Uint32(b[off:]), Value: le.Uint64(b[off+4:])}
		off += xcrRecSize
	}
	n.XSAVE = append([]byte(nil), b[off:]...)
	*s = n
	return nil
}

// MarshalBinary encodes the state in the versioned format described in
// state_codec.go; it refuses a state UnmarshalBinary would refuse.
func (s *VMState) MarshalBinary() ([]byte, error) {
	if err := s.checkValues(); err != nil {
		return nil, err
	}
	b := make([]byte, vmStateSize)
	le := binary.LittleEndian
	copy(b[vmOffMagic:], vmMagic[:])
	le.PutUint32(b[vmOffVersion:], vmStateVersion)
	for _, f := range []struct {
		off, size int
		v         any
	}{
		{vmOffPICMaster, picStateSize, &s.PICMaster}, {vmOffPICSlave, picStateSize, &s.PICSlave},
		{vmOffIOAPIC, ioapicStateSize, &s.IOAPIC}, {vmOffPIT, pitStateSize, &s.PIT}, {vmOffClock, clockDataSize, &s.Clock},
	} {
		if _, err := binary.Encode(b[f.off:f.off+f.size], le, f.v); err != nil {
			return nil, fmt.Errorf("kvm: VM state: encode at %d: %w", f.off, err)
		}
	}
	return b, nil
}

// UnmarshalBinary decodes a state MarshalBinary encoded; its errors wrap
// ErrBadState and name the field. s is changed only on success.
func (s *VMState) UnmarshalBinary(b []byte) error {
	le := binary.LittleEndian
	if len(b) < vmOffVersion+4 {
		return badState("VM state: %d bytes, shorter than its header", len(b))
	}
	if [8]byte(b[vmOffMagic:vmOffMagic+8]) != vmMagic {
		return badState("VM state: magic %q, want %q", b[vmOffMagic:vmOffMagic+8], vmMagic[:])
	}
	if v := le.Uint32(b[vmOffVersion:]); v != vmStateVersion {
		return badState("VM state: format version %d, this build reads %d", v, vmStateVersion)
	}
	if len(b) != vmStateSize {
		return badState("VM state: %d bytes, want %d", len(b), vmStateSize)
	}
	if r := le.Uint32(b[vmOffReserved:]); r != 0 {
		return badState("VM state: reserved word %#x, want 0", r)
	}
	var n VMState
	for _, f := range []struct {
		name      string
		off, size int
		v         any
	}{
		{"PIC master", vmOffPICMaster, picStateSize, &n.PICMaster}, {"PIC slave", vmOffPICSlave, picStateSize, &n.PICSlave},
		{"IOAPIC", vmOffIOAPIC, ioapicStateSize, &n.IOAPIC}, {"PIT", vmOffPIT, pitStateSize, &n.PIT},
		{"clock", vmOffClock, clockDataSize, &n.Clock},
	} {
		if _, err := binary.Decode(b[f.off:f.off+f.size], le, f.v); err != nil {
			return badState("VM state: %s: %v", f.name, err)
		}
	}
	if err := n.checkValues(); err != nil {
		return err
	}
	*s = n
	return nil
}

// checkValues refuses values KVM would reject or misread, for
// UnmarshalBinary and, so that a snapshot that cannot be restored fails
// when taken, MarshalBinary.
func (s *VCPUState) checkValues() error {
	if s.MPState > maxMPState {
		return badState("vCPU state: MP state %d, at most %d", s.MPState, maxMPState)
	}
	if s.DebugRegs.Flags != 0 {
		return badState("vCPU state: debug registers flags %#x, want 0", s.DebugRegs.Flags)
	}
	if f := s.Events.Flags; f&^vcpuEventValidAll != 0 {
		return badState("vCPU state: events flags %#x has unknown bits %#x", f, f&^vcpuEventValidAll)
	}
	return nil
}

// checkValues is VCPUState.checkValues for the VM state.
func (s *VMState) checkValues() error {
	for i, c := range s.PIT.Channels {
		switch {
		case c.Count > pitMaxCount:
			return badState("VM state: PIT channel %d count %#x, at most %#x", i, c.Count, pitMaxCount)
		case c.Mode > pitMaxMode && c.Mode != pitModeUnset:
			return badState("VM state: PIT channel %d mode %d, at most %d or %d (never programmed)", i, c.Mode, pitMaxMode, pitModeUnset)
		case c.RWMode > pitMaxRWMode:
			return badState("VM state: PIT channel %d rw_mode %d, at most %d", i, c.RWMode, pitMaxRWMode)
		case c.ReadState > pitMaxReadState:
			return badState("VM state: PIT channel %d read_state %d, at most %d", i, c.ReadState, pitMaxReadState)
		case c.WriteState > pitMaxRWState:
			return badState("VM state: PIT channel %d write_state %d, at most %d", i, c.WriteState, pitMaxRWState)
		}
	}
	if f := s.PIT.Flags; f&^pitFlagsAll != 0 {
		return badState("VM state: PIT flags %#x has unknown bits %#x", f, f&^pitFlagsAll)
	}
	if f := s.Clock.Flags; f&^clockFlagsAll != 0 {
		return badState("VM state: clock flags %#x has unknown bits %#x", f, f&^clockFlagsAll)
	}
	return nil
}
