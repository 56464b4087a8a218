package corral

import (
	"fmt"
	"strings"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/kvm"
)

// dump describes a vCPU's state for an error report: registers, control
// registers, segments, and the code bytes at RIP when they can be found.
func (m *Machine) dump(v *kvm.VCPU) string {
	r, err := v.Regs()
	if err != nil {
		return "registers unavailable: " + err.Error()
	}
	s, err := v.Sregs()
	if err != nil {
		return "segment registers unavailable: " + err.Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  RIP=%016x RFLAGS=%08x RSP=%016x RBP=%016x\n", r.RIP, r.RFLAGS, r.RSP, r.RBP)
	fmt.Fprintf(&b, "  RAX=%016x RBX=%016x RCX=%016x RDX=%016x\n", r.RAX, r.RBX, r.RCX, r.RDX)
	fmt.Fprintf(&b, "  RSI=%016x RDI=%016x R8 =%016x R9 =%016x\n", r.RSI, r.RDI, r.R8, r.R9)
	fmt.Fprintf(&b, "  R10=%016x R11=%016x R12=%016x R13=%016x\n", r.R10, r.R11, r.R12, r.R13)
	fmt.Fprintf(&b, "  R14=%016x R15=%016x\n", r.R14, r.R15)
	fmt.Fprintf(&b, "  CR0=%08x CR2=%016x CR3=%016x CR4=%08x EFER=%x\n", s.CR0, s.CR2, s.CR3, s.CR4, s.EFER)
	fmt.Fprintf(&b, "  CS=%04x base %x L=%d DB=%d  SS=%04x DS=%04x  GDT=%x/%x IDT=%x/%x\n",
		s.CS.Selector, s.CS.Base, s.CS.L, s.CS.DB, s.SS.Selector, s.DS.Selector, s.GDT.Base, s.GDT.Limit, s.IDT.Base, s.IDT.Limit)
	lin := s.CS.Base + r.RIP
	if s.CS.L == 1 {
		lin = r.RIP
	}
	if code, err := readLinear(m.mem, &s, lin, 16); err == nil {
		fmt.Fprintf(&b, "  code at RIP: % x", code)
	} else {
		fmt.Fprintf(&b, "  code at RIP unavailable: %v", err)
	}
	return b.String()
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
