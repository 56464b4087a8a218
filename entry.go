package corral

import (
	"errors"
	"fmt"
	"os"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/kvm"
)

// loadKernel opens the kernel and initrd and has boot write them, with
// everything they need, into guest memory.
func (m *Machine) loadKernel() (*boot.Entry, error) {
	k, err := os.Open(m.cfg.Kernel)
	if err != nil {
		return nil, fmt.Errorf("corral: kernel: %w", err)
	}
	defer k.Close()
	ks, err := k.Stat()
	if err != nil {
		return nil, fmt.Errorf("corral: kernel: %w", err)
	}
	bc := boot.Config{
		Kernel: k, KernelSize: ks.Size(),
		Cmdline: m.cfg.Cmdline, CPUs: m.cfg.cpus(), NoACPI: m.cfg.NoACPI, Logger: m.log,
	}
	if m.cfg.Initrd != "" {
		f, err := os.Open(m.cfg.Initrd)
		if err != nil {
			return nil, fmt.Errorf("corral: initrd: %w", err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("corral: initrd: %w", err)
		}
		bc.Initrd, bc.InitrdSize = f, st.Size()
	}
	e, err := boot.Load(m.mem, bc)
	if err != nil {
		// Validate runs boot.Check first; this catches files that changed
		// since, still as configuration errors.
		for _, cfgErr := range []error{boot.ErrBadConfig, boot.ErrNoRoom, boot.ErrNotKernel, boot.ErrBadKernel, boot.ErrNoPVHEntry} {
			if errors.Is(err, cfgErr) {
				return nil, fmt.Errorf("%w: loading kernel %s: %w", ErrConfig, m.cfg.Kernel, err)
			}
		}
		return nil, fmt.Errorf("corral: loading kernel %s: %w", m.cfg.Kernel, err)
	}
	return e, nil
}

// setEntry loads boot's entry state into vCPU 0.
func setEntry(v *kvm.VCPU, e *boot.Entry) error {
	s, err := v.Sregs()
	if err != nil {
		return err
	}
	s.CS = kvmSegment(e.CS)
	ds := kvmSegment(e.DS)
	s.DS, s.ES, s.FS, s.GS, s.SS = ds, ds, ds, ds, ds
	s.TR = kvmSegment(e.TR)
	s.GDT = kvm.DTable{Base: e.GDT.Base, Limit: e.GDT.Limit}
	s.IDT = kvm.DTable{Base: e.IDT.Base, Limit: e.IDT.Limit}
	s.CR0, s.CR3, s.CR4, s.EFER = e.CR0, e.CR3, e.CR4, e.EFER
	if err := v.SetSregs(s); err != nil {
		return err
	}
	return v.SetRegs(kvm.Regs{RIP: e.RIP, RSP: e.RSP, RSI: e.RSI, RBX: e.RBX, RFLAGS: e.RFLAGS})
}

func kvmSegment(s boot.Segment) kvm.Segment {
	b := func(v bool) uint8 {
		if v {
			return 1
		}
		return 0
	}
	return kvm.Segment{
		Base: s.Base, Limit: s.Limit, Selector: s.Selector, Type: s.Type,
		Present: b(s.Present), DPL: s.DPL, DB: b(s.DB), S: b(s.S), L: b(s.L), G: b(s.G), AVL: b(s.AVL),
		Unusable: b(!s.Present),
	}
}
