package corral

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/kvm"
)

// createVCPUs creates every vCPU with its CPUID, MSRs, LAPIC and FPU state,
// and puts vCPU 0 at the kernel's entry. The others wait in KVM for the
// INIT/SIPI sequence the guest sends through its local APIC.
func (m *Machine) createVCPUs(entry *boot.Entry) error {
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	msrList, err := m.sys.MSRIndexList()
	if err != nil {
		return err
	}
	m.msrIndices = msrList
	msrs := kvm.BootMSRs(msrList)
	n := m.cfg.cpus()
	for i := 0; i < n; i++ {
		v, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		if err := v.SetCPUID(kvm.GuestCPUID(supported, i, kvm.Topology{CPUs: n})); err != nil {
			return err
		}
		if err := v.SetMSRs(msrs); err != nil {
			return err
		}
		if err := setupLAPIC(v); err != nil {
			return err
		}
		if err := v.SetFPU(kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}); err != nil {
			return err
		}
	}
	return setEntry(m.vcpus[0], entry)
}

// setupLAPIC wires LINT0 to ExtINT (the PIC) and LINT1 to NMI, as a PC
// BIOS leaves them.
func setupLAPIC(v *kvm.VCPU) error {
	l, err := v.LAPIC()
	if err != nil {
		return err
	}
	lvt := func(off int, mode uint32) {
		l.Set(off, l.Get(off)&^0x700|mode<<8)
	}
	lvt(kvm.LAPICRegLVT0, kvm.LAPICModeExtINT)
	lvt(kvm.LAPICRegLVT1, kvm.LAPICModeNMI)
	return v.SetLAPIC(l)
}

// runVCPU is the goroutine of one vCPU: locked to its OS thread, it runs
// the guest and handles exits until the machine stops.
func (m *Machine) runVCPU(v *kvm.VCPU) {
	defer m.vcpuWG.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v.BindThread()
	defer v.UnbindThread()
	for !m.stopping.Load() {
		if m.pause.want.Load() {
			m.park(v)
			continue
		}
		err := v.Run()
		if errors.Is(err, kvm.ErrInterrupted) || errors.Is(err, kvm.ErrAgain) {
			// A Kick (the machine is stopping: the loop ends), a stray
			// signal (run again; a Kick sets stopping before signalling),
			// or an AP woken before its SIPI made it runnable.
			continue
		}
		if err != nil {
			m.end(Exit{Reason: ExitError, Err: m.vcpuError(v, "KVM_RUN failed", err)})
			return
		}
		m.exits.add(v.ExitReason())
		if e, stop := m.handleExit(v); stop {
			m.end(e)
			return
		}
	}
}

// handleExit serves one exit. It returns stop=true with the machine's exit
// when the exit ends the machine.
func (m *Machine) handleExit(v *kvm.VCPU) (Exit, bool) {
	switch r := v.ExitReason(); r {
	case kvm.ExitIO:
		io, err := v.IO()
		if err != nil {
			return Exit{Reason: ExitError, Err: m.vcpuError(v, "reading the I/O exit", err)}, true
		}
		for i := 0; i < io.Count; i++ {
			d := io.Data[i*io.Size : (i+1)*io.Size]
			if io.Out {
				if !m.pio.Write(uint64(io.Port), d) {
					m.unclaimedAccess(unclaimedPortWrite, uint64(io.Port), io.Size)
				}
			} else if !m.pio.Read(uint64(io.Port), d) {
				for j := range d {
					d[j] = 0xff
				}
				m.unclaimedAccess(unclaimedPortRead, uint64(io.Port), io.Size)
			}
		}
	case kvm.ExitMMIO:
		mm := v.MMIO()
		if mm.IsWrite {
			if !m.mmio.Write(mm.Addr, mm.Data) {
				m.unclaimedAccess(unclaimedMMIOWrite, mm.Addr, len(mm.Data))
			}
		} else if !m.mmio.Read(mm.Addr, mm.Data) {
			for j := range mm.Data {
				mm.Data[j] = 0xff
			}
			m.unclaimedAccess(unclaimedMMIORead, mm.Addr, len(mm.Data))
		}
	case kvm.ExitIntr, kvm.ExitDebug, kvm.ExitIRQWindowOpen:
		// Nothing to do: the loop checks whether the machine is stopping.
	case kvm.ExitHLT:
		// With the in-kernel LAPIC, KVM handles HLT itself; a HLT exit
		// means a guest halted for good with no way to wake it.
		return Exit{Reason: ExitGuestFault, Err: m.vcpuError(v, "guest halted with no way to wake (KVM_EXIT_HLT)", nil)}, true
	case kvm.ExitShutdown:
		return Exit{Reason: ExitGuestFault, Err: m.vcpuError(v, "guest triple fault (KVM_EXIT_SHUTDOWN)", nil)}, true
	case kvm.ExitSystemEvent:
		switch t := v.SystemEvent(); t {
		case kvm.SystemEventShutdown:
			return Exit{Reason: ExitPowerOff, Detail: "system event"}, true
		case kvm.SystemEventReset:
			return Exit{Reason: ExitReset, Detail: "system event"}, true
		default:
			return Exit{Reason: ExitGuestFault, Err: m.vcpuError(v, fmt.Sprintf("guest crash system event %d", t), nil)}, true
		}
	case kvm.ExitInternalError:
		sub, data := v.InternalError()
		what := fmt.Sprintf("KVM internal error, suberror %d (%s), data %#x", sub, internalErrorName(sub), data)
		if sub == kvm.InternalErrorEmulation {
			// An instruction KVM cannot emulate (MMIO through an odd
			// instruction, garbage executed as code): the guest's doing.
			return Exit{Reason: ExitGuestFault, Err: m.vcpuError(v, what, nil)}, true
		}
		return Exit{Reason: ExitError, Err: m.vcpuError(v, what, nil)}, true
	case kvm.ExitFailEntry:
		return Exit{Reason: ExitError, Err: m.vcpuError(v, fmt.Sprintf("KVM could not enter the guest, hardware reason %#x", v.FailEntry()), nil)}, true
	default:
		return Exit{Reason: ExitError, Err: m.vcpuError(v, fmt.Sprintf("unexpected exit %v", r), nil)}, true
	}
	return Exit{}, false
}

func internalErrorName(sub uint32) string {
	switch sub {
	case kvm.InternalErrorEmulation:
		return "emulation failure: KVM could not emulate an instruction"
	case kvm.InternalErrorSimulEx:
		return "exception while delivering an exception"
	case kvm.InternalErrorDeliveryEv:
		return "event delivery failed"
	case kvm.InternalErrorUnexpectedExit:
		return "unexpected exit from the guest"
	}
	return "unknown"
}
