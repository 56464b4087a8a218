package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrInterrupted is returned by Run when KVM_RUN was interrupted by Kick (or
// any other signal) before or while running the guest. The caller decides
// whether to run again; it must not retry blindly.
var ErrInterrupted = errors.New("kvm: KVM_RUN interrupted")

// ErrAgain is returned by Run when KVM asks to be called again: an
// application processor waiting for INIT/SIPI was woken by an event but is
// not runnable yet.
var ErrAgain = errors.New("kvm: KVM_RUN asks to run again")

// VCPU is one virtual CPU: its file descriptor and its mmap'd kvm_run.
//
// States: a VCPU is created idle; the goroutine that runs it calls
// BindThread once (after runtime.LockOSThread), then Run in a loop, then
// UnbindThread. Kick may be called from any goroutine at any time: it makes
// the current or next Run return ErrInterrupted promptly, and stays in
// effect until ClearKick.
type VCPU struct {
	fd   int
	vmfd int // the VM's, for capabilities that vary per VM (KVM_CAP_XSAVE2)
	id   int
	run  []byte

	mu  sync.Mutex // guards tid against a stale signal target
	tid int        // OS thread running this vCPU, 0 when none

	// cpuidSet is what SetCPUID last gave KVM: what SaveState records.
	// KVM_GET_CPUID2 reads back the same on hardware KVM, but a nested
	// KVM (kvm_pvm) answers with its host's leaves whatever was set, and
	// a snapshot holding those would be refused by every restore
	// (CheckCPUID: features the host cannot give).
	cpuidSet []CPUIDEntry
}

// ID returns the vCPU index given at creation (also its APIC ID).
func (v *VCPU) ID() int { return v.id }

// Close unmaps kvm_run and closes the vCPU. It must not be running.
func (v *VCPU) Close() error {
	err1 := unix.Munmap(v.run)
	err2 := unix.Close(v.fd)
	if err1 != nil {
		return fmt.Errorf("kvm: munmap kvm_run of vCPU %d: %w", v.id, err1)
	}
	if err2 != nil {
		return fmt.Errorf("kvm: close vCPU %d: %w", v.id, err2)
	}
	return nil
}

// BindThread records the calling OS thread as this vCPU's, so Kick can
// signal it. The caller must have locked its goroutine to the thread.
func (v *VCPU) BindThread() {
	v.mu.Lock()
	v.tid = unix.Gettid()
	v.mu.Unlock()
}

// UnbindThread forgets the vCPU's thread; call before unlocking it.
func (v *VCPU) UnbindThread() {
	v.mu.Lock()
	v.tid = 0
	v.mu.Unlock()
}

// kickSignal interrupts a thread blocked in KVM_RUN. The Go runtime uses
// SIGURG for preemption and tolerates spurious ones, so sending it to one of
// its threads is harmless.
const kickSignal = unix.SIGURG

// Kick makes the vCPU leave KVM_RUN promptly: it sets kvm_run.immediate_exit
// (so a Run that has not entered the guest yet returns at once) and signals
// the vCPU's thread (so one already in the guest, or halted in the kernel,
// comes out).
func (v *VCPU) Kick() {
	setImmediateExit(v.run, true)
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.tid != 0 {
		_ = unix.Tgkill(unix.Getpid(), v.tid, kickSignal)
	}
}

// ClearKick undoes Kick, before running again after an ErrInterrupted that
// the caller chose to ignore.
func (v *VCPU) ClearKick() { setImmediateExit(v.run, false) }

// Run enters the guest until the next exit that needs user space. On
// success the exit is described by ExitReason and the accessors below.
func (v *VCPU) Run() error {
	_, err := ioctl(v.fd, kvmRun, 0)
	if err != nil {
		if errors.Is(err, unix.EINTR) {
			return ErrInterrupted
		}
		if errors.Is(err, unix.EAGAIN) {
			return ErrAgain
		}
		return fmt.Errorf("kvm: KVM_RUN vCPU %d: %w", v.id, err)
	}
	return nil
}

// Offsets in struct kvm_run.
const (
	runExitReason = 8
	runUnion      = 32
)

// ExitReason returns why the last Run returned.
func (v *VCPU) ExitReason() ExitReason {
	return ExitReason(binary.LittleEndian.Uint32(v.run[runExitReason:]))
}

// IOExit describes a KVM_EXIT_IO: Count accesses of Size bytes to Port.
// Data aliases kvm_run: for an IN, fill it before the next Run.
type IOExit struct {
	Out   bool
	Size  int
	Port  uint16
	Count int
	Data  []byte
}

// IO decodes a KVM_EXIT_IO. It fails if KVM describes data outside the
// kvm_run mapping.
func (v *VCPU) IO() (IOExit, error) {
	u := v.run[runUnion:]
	e := IOExit{
		Out:   u[0] == 1,
		Size:  int(u[1]),
		Port:  binary.LittleEndian.Uint16(u[2:]),
		Count: int(binary.LittleEndian.Uint32(u[4:])),
	}
	off := binary.LittleEndian.Uint64(u[8:])
	n := uint64(e.Size) * uint64(e.Count)
	if off > uint64(len(v.run)) || n > uint64(len(v.run))-off {
		return e, fmt.Errorf("kvm: vCPU %d: KVM_EXIT_IO data at %#x+%d outside kvm_run", v.id, off, n)
	}
	e.Data = v.run[off : off+n]
	return e, nil
}

// MMIOExit describes a KVM_EXIT_MMIO. Data aliases kvm_run: for a read,
// fill it before the next Run.
type MMIOExit struct {
	Addr    uint64
	Data    []byte
	IsWrite bool
}

// MMIO decodes a KVM_EXIT_MMIO.
func (v *VCPU) MMIO() MMIOExit {
	u := v.run[runUnion:]
	n := binary.LittleEndian.Uint32(u[16:])
	if n > 8 {
		n = 8
	}
	return MMIOExit{
		Addr:    binary.LittleEndian.Uint64(u[0:]),
		Data:    u[8 : 8+n],
		IsWrite: u[20] != 0,
	}
}

// SystemEvent decodes a KVM_EXIT_SYSTEM_EVENT: its type (SystemEventShutdown,
// SystemEventReset, SystemEventCrash, …).
func (v *VCPU) SystemEvent() uint32 {
	return binary.LittleEndian.Uint32(v.run[runUnion:])
}

// InternalError decodes a KVM_EXIT_INTERNAL_ERROR: its suberror and data words.
func (v *VCPU) InternalError() (suberror uint32, data []uint64) {
	u := v.run[runUnion:]
	suberror = binary.LittleEndian.Uint32(u[0:])
	n := binary.LittleEndian.Uint32(u[4:])
	if n > 16 {
		n = 16
	}
	for i := uint32(0); i < n; i++ {
		data = append(data, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	return suberror, data
}

// FailEntry decodes a KVM_EXIT_FAIL_ENTRY's hardware failure reason.
func (v *VCPU) FailEntry() uint64 {
	return binary.LittleEndian.Uint64(v.run[runUnion:])
}

// Regs returns the general-purpose registers.
func (v *VCPU) Regs() (Regs, error) {
	var r Regs
	if err := ioctlRegs(v.fd, kvmGetRegs, &r); err != nil {
		return r, fmt.Errorf("kvm: KVM_GET_REGS vCPU %d: %w", v.id, err)
	}
	return r, nil
}

// SetRegs sets the general-purpose registers.
func (v *VCPU) SetRegs(r Regs) error {
	if err := ioctlRegs(v.fd, kvmSetRegs, &r); err != nil {
		return fmt.Errorf("kvm: KVM_SET_REGS vCPU %d: %w", v.id, err)
	}
	return nil
}

// Sregs returns the segment and control registers.
func (v *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	if err := ioctlSregs(v.fd, kvmGetSregs, &s); err != nil {
		return s, fmt.Errorf("kvm: KVM_GET_SREGS vCPU %d: %w", v.id, err)
	}
	return s, nil
}

// SetSregs sets the segment and control registers.
func (v *VCPU) SetSregs(s Sregs) error {
	if err := ioctlSregs(v.fd, kvmSetSregs, &s); err != nil {
		return fmt.Errorf("kvm: KVM_SET_SREGS vCPU %d: %w", v.id, err)
	}
	return nil
}

// SetFPU sets the legacy FPU/SSE state.
func (v *VCPU) SetFPU(f FPU) error {
	if err := ioctlFPU(v.fd, kvmSetFPU, &f); err != nil {
		return fmt.Errorf("kvm: KVM_SET_FPU vCPU %d: %w", v.id, err)
	}
	return nil
}

// LAPIC returns the local APIC's register page.
func (v *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	if err := ioctlLAPIC(v.fd, kvmGetLAPIC, &l); err != nil {
		return l, fmt.Errorf("kvm: KVM_GET_LAPIC vCPU %d: %w", v.id, err)
	}
	return l, nil
}

// SetLAPIC sets the local APIC's register page.
func (v *VCPU) SetLAPIC(l LAPICState) error {
	if err := ioctlLAPIC(v.fd, kvmSetLAPIC, &l); err != nil {
		return fmt.Errorf("kvm: KVM_SET_LAPIC vCPU %d: %w", v.id, err)
	}
	return nil
}

// SetCPUID sets the CPUID leaves the guest sees.
func (v *VCPU) SetCPUID(entries []CPUIDEntry) error {
	if _, err := ioctlBuf(v.fd, kvmSetCPUID2, encodeCPUID(entries)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_CPUID2 vCPU %d (%d leaves): %w", v.id, len(entries), err)
	}
	v.cpuidSet = slices.Clone(entries)
	return nil
}

// SetMSRs writes MSRs. KVM stops at the first MSR it refuses; that is an
// error naming it.
func (v *VCPU) SetMSRs(msrs []MSR) error {
	if len(msrs) == 0 {
		return nil
	}
	buf := encodeMSRs(msrs)
	n, err := ioctlBuf(v.fd, kvmSetMSRs, buf)
	if err != nil {
		return fmt.Errorf("kvm: KVM_SET_MSRS vCPU %d: %w", v.id, err)
	}
	if int(n) < len(msrs) {
		return fmt.Errorf("kvm: KVM_SET_MSRS vCPU %d: MSR %#x refused", v.id, msrs[n].Index)
	}
	return nil
}

// MSRs reads the MSRs with the given indices.
func (v *VCPU) MSRs(indices []uint32) ([]MSR, error) {
	msrs := make([]MSR, len(indices))
	for i, idx := range indices {
		msrs[i].Index = idx
	}
	if len(msrs) == 0 {
		return msrs, nil
	}
	buf := encodeMSRs(msrs)
	n, err := ioctlBuf(v.fd, kvmGetMSRs, buf)
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_GET_MSRS vCPU %d: %w", v.id, err)
	}
	if int(n) < len(msrs) {
		return nil, fmt.Errorf("kvm: KVM_GET_MSRS vCPU %d: MSR %#x refused", v.id, msrs[n].Index)
	}
	for i := range msrs {
		msrs[i].Data = binary.LittleEndian.Uint64(buf[msrsHeaderSize+i*msrEntrySize+8:])
	}
	return msrs, nil
}

// MPState returns the vCPU's multiprocessing state (MPState* constants).
func (v *VCPU) MPState() (uint32, error) {
	var s [4]byte
	if _, err := ioctlBuf(v.fd, kvmGetMPState, s[:]); err != nil {
		return 0, fmt.Errorf("kvm: KVM_GET_MP_STATE vCPU %d: %w", v.id, err)
	}
	return binary.LittleEndian.Uint32(s[:]), nil
}

func encodeMSRs(msrs []MSR) []byte {
	buf := make([]byte, msrsHeaderSize+len(msrs)*msrEntrySize)
	binary.LittleEndian.PutUint32(buf, uint32(len(msrs)))
	for i, m := range msrs {
		e := buf[msrsHeaderSize+i*msrEntrySize:]
		binary.LittleEndian.PutUint32(e[0:], m.Index)
		binary.LittleEndian.PutUint64(e[8:], m.Data)
	}
	return buf
}
