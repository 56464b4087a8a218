package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Sizes of the fixed kernel structures the snapshot ioctls exchange
// (abi_unsafe_test.go checks them against <linux/kvm.h>).
const (
	xsaveLegacySize = 4096 // struct kvm_xsave
	xcrsSize        = 392  // struct kvm_xcrs
	debugRegsSize   = 128  // struct kvm_debugregs
	vcpuEventsSize  = 64   // struct kvm_vcpu_events
	regsSize        = 144  // struct kvm_regs
	sregsSize       = 312  // struct kvm_sregs
	lapicSize       = 1024 // struct kvm_lapic_state
	maxXCRs         = 16   // KVM_MAX_XCRS
	maxCPUIDEntries = 256  // KVM_MAX_CPUID_ENTRIES
)

// Offsets in struct kvm_xcrs.
const (
	xcrsOffNr      = 0
	xcrsOffFlags   = 4
	xcrsOffEntries = 8
	xcrEntrySize   = 16 // struct kvm_xcr: xcr u32, reserved u32, value u64
	xcrOffIndex    = 0
	xcrOffValue    = 8
)

// MSRIA32TSCDeadline is the local APIC timer's TSC-deadline MSR. KVM ignores
// writes to it unless the LAPIC timer is in TSC-deadline mode, so it is
// restored after the LAPIC (and after IA32_TSC, which it is relative to).
const MSRIA32TSCDeadline = 0x6e0

// DebugRegs is struct kvm_debugregs: DR0-3, DR6 and DR7.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64 // must be 0
	_     [9]uint64
}

// VCPUEvents is struct kvm_vcpu_events: exceptions, interrupts, NMIs and
// SMIs that are pending or being injected, and the interrupt shadow.
type VCPUEvents struct {
	ExceptionInjected     uint8
	ExceptionNr           uint8
	ExceptionHasErrorCode uint8
	ExceptionPending      uint8
	ExceptionErrorCode    uint32
	InterruptInjected     uint8
	InterruptNr           uint8
	InterruptSoft         uint8
	InterruptShadow       uint8
	NMIInjected           uint8
	NMIPending            uint8
	NMIMasked             uint8
	_                     uint8
	SIPIVector            uint32
	Flags                 uint32 // VCPUEventValid*: which optional fields KVM_SET_VCPU_EVENTS applies
	SMISMM                uint8
	SMIPending            uint8
	SMIInsideNMI          uint8
	SMILatchedInit        uint8
	TripleFaultPending    uint8
	_                     [26]uint8
	ExceptionHasPayload   uint8
	ExceptionPayload      uint64
}

// Flags of VCPUEvents (KVM_VCPUEVENT_VALID_*).
const (
	VCPUEventValidNMIPending  = 0x01
	VCPUEventValidSIPIVector  = 0x02
	VCPUEventValidShadow      = 0x04
	VCPUEventValidSMM         = 0x08
	VCPUEventValidPayload     = 0x10
	VCPUEventValidTripleFault = 0x20
	vcpuEventValidAll         = 0x3f
)

// maxMPState is the highest MP state KVM defines (KVM_MP_STATE_SUSPENDED).
const maxMPState = 10

// XCR is one extended control register; XCR0 (Index 0) is the mask of
// XSAVE features the guest enabled.
type XCR struct {
	Index uint32
	Value uint64
}

// VCPUState is everything KVM holds for one vCPU, as SaveState reads it and
// RestoreState writes it back. MarshalBinary gives its on-disk form.
type VCPUState struct {
	CPUID     []CPUIDEntry // the leaves the vCPU was given (SetCPUID's; else KVM_GET_CPUID2)
	Regs      Regs
	Sregs     Sregs
	XSAVE     []byte // kvm_xsave, or the larger KVM_GET_XSAVE2 area
	XCRs      []XCR
	DebugRegs DebugRegs
	LAPIC     LAPICState
	MSRs      []MSR // the MSRs of the list given to SaveState that this vCPU could read
	Events    VCPUEvents
	MPState   uint32
	TSCKHz    uint32 // 0: unknown, not restored
}

// ErrExitPending is returned by CompletePendingIO when completing the I/O
// produced another exit (a string I/O instruction with more to do): the
// caller handles that exit as usual and calls CompletePendingIO again.
var ErrExitPending = errors.New("kvm: KVM_RUN returned another exit while completing I/O")

// SaveState reads the vCPU's whole state. The vCPU must not be in KVM_RUN,
// and its last exit must have been completed (CompletePendingIO).
// msrIndices is the list to try (System.MSRIndexList); those this vCPU
// cannot read are left out and the rest kept with their values.
func (v *VCPU) SaveState(msrIndices []uint32) (*VCPUState, error) {
	if len(msrIndices) > maxMSRs {
		return nil, fmt.Errorf("kvm: save vCPU %d: %d MSR indices, at most %d", v.id, len(msrIndices), maxMSRs)
	}
	s := &VCPUState{}
	var err error
	if v.cpuidSet != nil {
		s.CPUID = slices.Clone(v.cpuidSet)
	} else if s.CPUID, err = v.cpuid(); err != nil {
		return nil, err
	}
	if s.Regs, err = v.Regs(); err != nil {
		return nil, err
	}
	if s.Sregs, err = v.Sregs(); err != nil {
		return nil, err
	}
	if s.XSAVE, err = v.xsave(); err != nil {
		return nil, err
	}
	if s.XCRs, err = v.xcrs(); err != nil {
		return nil, err
	}
	if err := v.getFixed(kvmGetDebugRegs, debugRegsSize, &s.DebugRegs); err != nil {
		return nil, err
	}
	if s.LAPIC, err = v.LAPIC(); err != nil {
		return nil, err
	}
	if s.MSRs, err = v.readableMSRs(msrIndices); err != nil {
		return nil, err
	}
	if err := v.getFixed(kvmGetVCPUEvents, vcpuEventsSize, &s.Events); err != nil {
		return nil, err
	}
	if s.MPState, err = v.MPState(); err != nil {
		return nil, err
	}
	khz, err := ioctl(v.fd, kvmGetTSCKHz, 0)
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_TSC_KHZ vCPU %d: %w", v.id, err)
	}
	s.TSCKHz = uint32(khz)
	return s, nil
}

// RestoreState writes s into a freshly created vCPU (never run), in the
// order KVM needs: CPUID first (it decides which XSAVE features and MSRs
// are valid), the TSC frequency before the TSC is written, Sregs, Regs, the
// MSRs with IA32_TSC first, XSAVE then XCRs, the LAPIC, then
// IA32_TSC_DEADLINE (KVM drops it unless the LAPIC timer is in deadline
// mode), debug registers, events and the MP state.
//
// The TSC frequency is set when it differs from the vCPU's and the VM has
// KVM_CAP_TSC_CONTROL; without it the guest keeps this host's frequency, as
// a kvmclock guest tolerates (KVM rescales kvmclock). KVM before 6.7 takes
// a TSC written within a second of the one it expects (the VM's first
// vCPU's since creation, or another vCPU's just restored) for a vCPU
// synchronization and keeps its own offset, which would restart a guest
// snapshotted less than a second of TSC after it started from the new VM's
// creation: its TSC would go back. So IA32_TSC is first written well
// outside that window (writeTSCApart), which makes the saved value's
// write an ordinary one too.
func (v *VCPU) RestoreState(s *VCPUState) error {
	if len(s.CPUID) > 0 {
		if err := v.SetCPUID(s.CPUID); err != nil {
			return err
		}
	}
	if err := v.restoreTSCKHz(s.TSCKHz); err != nil {
		return err
	}
	if err := v.SetSregs(s.Sregs); err != nil {
		return err
	}
	if err := v.SetRegs(s.Regs); err != nil {
		return err
	}
	early, deadline := orderMSRs(s.MSRs)
	if err := v.writeTSCApart(early, s.TSCKHz); err != nil {
		return err
	}
	if err := v.SetMSRs(early); err != nil {
		return err
	}
	if err := v.setXSAVE(s.XSAVE); err != nil {
		return err
	}
	if err := v.setXCRs(s.XCRs); err != nil {
		return err
	}
	if err := v.SetLAPIC(s.LAPIC); err != nil {
		return err
	}
	if err := v.SetMSRs(deadline); err != nil {
		return err
	}
	if err := v.setFixed(kvmSetDebugRegs, &s.DebugRegs); err != nil {
		return err
	}
	if err := v.setFixed(kvmSetVCPUEvents, &s.Events); err != nil {
		return err
	}
	var mp [4]byte
	binary.LittleEndian.PutUint32(mp[:], s.MPState)
	if _, err := ioctlBuf(v.fd, kvmSetMPState, mp[:]); err != nil {
		return fmt.Errorf("kvm: KVM_SET_MP_STATE vCPU %d state %d: %w", v.id, s.MPState, err)
	}
	return nil
}

// tscApart is how far, in seconds of TSC, writeTSCApart writes from the
// saved TSC: beyond KVM's one-second synchronization window.
const tscApart = 4

// writeTSCApart writes IA32_TSC tscApart seconds past the saved value in
// msrs (if any): a host write KVM cannot take for a synchronization with
// the VM's creation, after which the saved value's write, tscApart seconds
// from the last one, is not one either.
func (v *VCPU) writeTSCApart(msrs []MSR, khz uint32) error {
	if len(msrs) == 0 || msrs[0].Index != MSRIA32TSC || msrs[0].Data == 0 {
		return nil
	}
	if khz == 0 {
		cur, err := ioctl(v.fd, kvmGetTSCKHz, 0)
		if err != nil {
			return fmt.Errorf("kvm: KVM_GET_TSC_KHZ vCPU %d: %w", v.id, err)
		}
		khz = uint32(cur)
	}
	return v.SetMSRs([]MSR{{MSRIA32TSC, msrs[0].Data + tscApart*uint64(khz)*1000}})
}

// CompletePendingIO makes KVM finish the vCPU's last PIO or MMIO exit (a
// read's data is copied into the registers only on the next KVM_RUN): one
// KVM_RUN with immediate_exit set, which completes the I/O and returns
// EINTR without entering the guest. Call it from the goroutine that owns
// the vCPU while it is not running; immediate_exit is left as it was.
func (v *VCPU) CompletePendingIO() error {
	was := immediateExitOn(v.run)
	setImmediateExit(v.run, true)
	_, err := ioctl(v.fd, kvmRun, 0)
	if !was {
		setImmediateExit(v.run, false)
	}
	switch {
	case errors.Is(err, unix.EINTR):
		return nil
	case err == nil:
		return fmt.Errorf("%w: vCPU %d %v", ErrExitPending, v.id, v.ExitReason())
	default:
		return fmt.Errorf("kvm: KVM_RUN (completing I/O) vCPU %d: %w", v.id, err)
	}
}

// orderMSRs splits msrs into those set before the LAPIC, IA32_TSC first
// (other TSC-relative MSRs are computed from it), and IA32_TSC_DEADLINE,
// set after it.
func orderMSRs(msrs []MSR) (early, late []MSR) {
	for _, m := range msrs {
		switch m.Index {
		case MSRIA32TSC:
			early = append([]MSR{m}, early...)
		case MSRIA32TSCDeadline:
			late = append(late, m)
		default:
			early = append(early, m)
		}
	}
	return early, late
}

// cpuid returns the CPUID leaves set on the vCPU (KVM_GET_CPUID2).
func (v *VCPU) cpuid() ([]CPUIDEntry, error) {
	for n := 64; n <= maxCPUIDEntries; n *= 2 {
		buf := make([]byte, cpuidHeaderSize+n*cpuidEntrySize)
		binary.LittleEndian.PutUint32(buf, uint32(n))
		if _, err := ioctlBuf(v.fd, kvmGetCPUID2, buf); err != nil {
			if errors.Is(err, unix.E2BIG) {
				continue
			}
			return nil, fmt.Errorf("kvm: KVM_GET_CPUID2 vCPU %d: %w", v.id, err)
		}
		return decodeCPUID(buf), nil
	}
	return nil, fmt.Errorf("kvm: KVM_GET_CPUID2 vCPU %d: more than %d entries", v.id, maxCPUIDEntries)
}

// xsaveSize is the size of the vCPU's XSAVE area: KVM_CAP_XSAVE2's answer
// when it exceeds struct kvm_xsave (dynamic features such as AMX), else 4096.
func (v *VCPU) xsaveSize() (int, error) {
	n, err := checkExtension(v.vmfd, CapXSAVE2)
	if err != nil {
		return 0, err
	}
	if n > maxXSAVESize {
		return 0, fmt.Errorf("kvm: KVM_CAP_XSAVE2 says %d bytes, more than %d", n, maxXSAVESize)
	}
	return max(n, xsaveLegacySize), nil
}

func (v *VCPU) xsave() ([]byte, error) {
	size, err := v.xsaveSize()
	if err != nil {
		return nil, err
	}
	req := uintptr(kvmGetXSAVE)
	if size > xsaveLegacySize {
		req = kvmGetXSAVE2
	}
	buf := make([]byte, size)
	if _, err := ioctlBuf(v.fd, req, buf); err != nil {
		return nil, fmt.Errorf("kvm: %s vCPU %d (%d bytes): %w", ioctlName(req), v.id, size, err)
	}
	return buf, nil
}

// setXSAVE writes an XSAVE area. KVM_SET_XSAVE reads as many bytes as this
// vCPU's area has, so a smaller saved area is padded with zeros (components
// absent from its header's XSTATE_BV); a larger one is passed whole and KVM
// refuses it if it uses features this vCPU lacks.
func (v *VCPU) setXSAVE(area []byte) error {
	size, err := v.xsaveSize()
	if err != nil {
		return err
	}
	buf := make([]byte, max(size, len(area)))
	copy(buf, area)
	if _, err := ioctlBuf(v.fd, kvmSetXSAVE, buf); err != nil {
		return fmt.Errorf("kvm: KVM_SET_XSAVE vCPU %d (%d bytes saved, %d here): %w", v.id, len(area), size, err)
	}
	return nil
}

func (v *VCPU) xcrs() ([]XCR, error) {
	var buf [xcrsSize]byte
	if _, err := ioctlBuf(v.fd, kvmGetXCRs, buf[:]); err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_XCRS vCPU %d: %w", v.id, err)
	}
	n := binary.LittleEndian.Uint32(buf[xcrsOffNr:])
	if n > maxXCRs {
		return nil, fmt.Errorf("kvm: KVM_GET_XCRS vCPU %d: %d XCRs, at most %d", v.id, n, maxXCRs)
	}
	out := make([]XCR, n)
	for i := range out {
		e := buf[xcrsOffEntries+i*xcrEntrySize:]
		out[i] = XCR{Index: binary.LittleEndian.Uint32(e[xcrOffIndex:]), Value: binary.LittleEndian.Uint64(e[xcrOffValue:])}
	}
	return out, nil
}

func (v *VCPU) setXCRs(xcrs []XCR) error {
	if len(xcrs) == 0 {
		return nil
	}
	if len(xcrs) > maxXCRs {
		return fmt.Errorf("kvm: KVM_SET_XCRS vCPU %d: %d XCRs, at most %d", v.id, len(xcrs), maxXCRs)
	}
	var buf [xcrsSize]byte
	binary.LittleEndian.PutUint32(buf[xcrsOffNr:], uint32(len(xcrs)))
	binary.LittleEndian.PutUint32(buf[xcrsOffFlags:], 0)
	for i, x := range xcrs {
		e := buf[xcrsOffEntries+i*xcrEntrySize:]
		binary.LittleEndian.PutUint32(e[xcrOffIndex:], x.Index)
		binary.LittleEndian.PutUint64(e[xcrOffValue:], x.Value)
	}
	if _, err := ioctlBuf(v.fd, kvmSetXCRs, buf[:]); err != nil {
		return fmt.Errorf("kvm: KVM_SET_XCRS vCPU %d (XCR0 %#x): %w", v.id, xcrs[0].Value, err)
	}
	return nil
}

// readableMSRs reads the MSRs in indices that this vCPU can read. The index
// list names MSRs some vCPUs cannot read (features absent from their CPUID,
// nested hosts), and KVM_GET_MSRS stops at the first it cannot: that one is
// dropped and the read resumes after it.
func (v *VCPU) readableMSRs(indices []uint32) ([]MSR, error) {
	out := make([]MSR, 0, len(indices))
	rest := indices
	for len(rest) > 0 {
		msrs := make([]MSR, len(rest))
		for i, idx := range rest {
			msrs[i].Index = idx
		}
		buf := encodeMSRs(msrs)
		r, err := ioctlBuf(v.fd, kvmGetMSRs, buf)
		if err != nil {
			return nil, fmt.Errorf("kvm: KVM_GET_MSRS vCPU %d (%d MSRs from %#x): %w", v.id, len(rest), rest[0], err)
		}
		n := int(r)
		if n > len(rest) {
			return nil, fmt.Errorf("kvm: KVM_GET_MSRS vCPU %d read %d of %d MSRs", v.id, n, len(rest))
		}
		for i := 0; i < n; i++ {
			out = append(out, MSR{Index: rest[i], Data: binary.LittleEndian.Uint64(buf[msrsHeaderSize+i*msrEntrySize+8:])})
		}
		if n == len(rest) {
			break
		}
		rest = rest[n+1:]
	}
	return out, nil
}

func (v *VCPU) restoreTSCKHz(khz uint32) error {
	if khz == 0 {
		return nil
	}
	cur, err := ioctl(v.fd, kvmGetTSCKHz, 0)
	if err != nil {
		return fmt.Errorf("kvm: KVM_GET_TSC_KHZ vCPU %d: %w", v.id, err)
	}
	if uint32(cur) == khz {
		return nil
	}
	ok, err := checkExtension(v.vmfd, CapTSCControl)
	if err != nil {
		return err
	}
	if ok <= 0 {
		return nil
	}
	if _, err := ioctl(v.fd, kvmSetTSCKHz, uintptr(khz)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_TSC_KHZ vCPU %d to %d kHz (vCPU has %d): %w", v.id, khz, cur, err)
	}
	return nil
}

// getFixed reads a fixed-size kernel structure into out, whose
// encoding/binary layout is that structure's.
func (v *VCPU) getFixed(req uintptr, size int, out any) error {
	buf := make([]byte, size)
	if _, err := ioctlBuf(v.fd, req, buf); err != nil {
		return fmt.Errorf("kvm: %s vCPU %d: %w", ioctlName(req), v.id, err)
	}
	if _, err := binary.Decode(buf, binary.LittleEndian, out); err != nil {
		return fmt.Errorf("kvm: %s vCPU %d: decode: %w", ioctlName(req), v.id, err)
	}
	return nil
}

// setFixed writes in, whose encoding/binary layout is the request's kernel
// structure.
func (v *VCPU) setFixed(req uintptr, in any) error {
	buf, err := binary.Append(nil, binary.LittleEndian, in)
	if err != nil {
		return fmt.Errorf("kvm: %s vCPU %d: encode: %w", ioctlName(req), v.id, err)
	}
	if _, err := ioctlBuf(v.fd, req, buf); err != nil {
		return fmt.Errorf("kvm: %s vCPU %d: %w", ioctlName(req), v.id, err)
	}
	return nil
}

// immediateExitOn reports whether kvm_run.immediate_exit is set, read
// atomically since Kick may set it from another goroutine.
func immediateExitOn(run []byte) bool {
	return atomic.LoadUint32(immediateExitWord(run))&(0xff<<8) != 0
}
