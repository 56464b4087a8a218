package corral

import (
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/kvm"
)

// vcpuError records what happened on v with v's state: registers, control
// registers, segments, and the code bytes at RIP when they can be found.
func (m *Machine) vcpuError(v *kvm.VCPU, what string, err error) *VCPUError {
	e := &VCPUError{VCPU: v.ID(), What: what, Err: err}
	r, rerr := v.Regs()
	if rerr != nil {
		e.StateErr = fmt.Errorf("registers: %w", rerr)
		return e
	}
	e.Regs = &r
	s, serr := v.Sregs()
	if serr != nil {
		e.StateErr = fmt.Errorf("segment registers: %w", serr)
		return e
	}
	e.Sregs = &s
	lin := s.CS.Base + r.RIP
	if s.CS.L == 1 {
		lin = r.RIP
	}
	code, cerr := readLinear(m.mem, &s, lin, 16)
	if cerr != nil {
		e.StateErr = fmt.Errorf("code at RIP: %w", cerr)
		return e
	}
	e.Code = code
	return e
}

// readLinear reads n bytes at a guest linear address, walking the guest's
// 4-level page tables when paging is on. Page-table entries come from the
// guest and are read through guestmem like any other guest data.
func readLinear(mem *guestmem.Memory, s *kvm.Sregs, lin uint64, n int) ([]byte, error) {
	const (
		cr0PG   = 1 << 31
		cr4PAE  = 1 << 5
		eferLMA = 1 << 10
		present = 1
		large   = 1 << 7
		addr    = 0x000f_ffff_ffff_f000
	)
	phys := lin
	if s.CR0&cr0PG != 0 {
		if s.CR4&cr4PAE == 0 || s.EFER&eferLMA == 0 {
			return nil, fmt.Errorf("paging mode other than 4-level long mode")
		}
		table := s.CR3 & addr
		for level := 3; level >= 0; level-- {
			idx := (lin >> (12 + 9*uint(level))) & 0x1ff
			e, err := mem.Uint64(table + idx*8)
			if err != nil {
				return nil, err
			}
			if e&present == 0 {
				return nil, fmt.Errorf("linear %#x not mapped", lin)
			}
			if level > 0 && level < 3 && e&large != 0 {
				size := uint64(1) << (12 + 9*uint(level))
				phys = e&addr&^(size-1) | lin&(size-1)
				break
			}
			if level == 0 {
				phys = e&addr | lin&0xfff
			}
			table = e & addr
		}
	}
	out := make([]byte, n)
	if err := mem.ReadAt(out, phys); err != nil {
		return nil, err
	}
	return out, nil
}
