package corral

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/corral-vmm/corral/kvm"
)

// VCPUError is what went wrong on one vCPU, with the vCPU's state at that
// moment as data: a guest fault (Exit.Reason ExitGuestFault) or a VMM
// failure while running the guest (ExitError). Error is one line; Dump
// gives the registers and the code at RIP on several; as a slog value it
// is a group of attributes. Find it with errors.As(exit.Err, &vcpuErr).
type VCPUError struct {
	VCPU int    // the vCPU's index
	What string // what happened, e.g. "triple fault (KVM_EXIT_SHUTDOWN)"
	Err  error  // the underlying error (a failed KVM_RUN), or nil

	Regs     *kvm.Regs  // general registers; nil when they could not be read
	Sregs    *kvm.Sregs // segment and control registers; nil when unavailable
	Code     []byte     // the bytes at RIP (up to 16); nil when unreadable
	StateErr error      // why Regs, Sregs or Code is missing, or nil
}

// Error describes the failure in one line: the vCPU, what happened, RIP and
// the underlying error.
func (e *VCPUError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vCPU %d: %s", e.VCPU, e.What)
	if e.Regs != nil {
		fmt.Fprintf(&b, " at RIP %#x", e.Regs.RIP)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the underlying error.
func (e *VCPUError) Unwrap() error { return e.Err }

// Dump describes the vCPU's state on several lines, each indented two
// spaces, without a final newline: registers, control registers, segments
// and the code bytes at RIP, or why they are missing.
func (e *VCPUError) Dump() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  vCPU %d: %s\n", e.VCPU, e.What)
	r, s := e.Regs, e.Sregs
	if r != nil {
		fmt.Fprintf(&b, "  RIP=%016x RFLAGS=%08x RSP=%016x RBP=%016x\n", r.RIP, r.RFLAGS, r.RSP, r.RBP)
		fmt.Fprintf(&b, "  RAX=%016x RBX=%016x RCX=%016x RDX=%016x\n", r.RAX, r.RBX, r.RCX, r.RDX)
		fmt.Fprintf(&b, "  RSI=%016x RDI=%016x R8 =%016x R9 =%016x\n", r.RSI, r.RDI, r.R8, r.R9)
		fmt.Fprintf(&b, "  R10=%016x R11=%016x R12=%016x R13=%016x\n", r.R10, r.R11, r.R12, r.R13)
		fmt.Fprintf(&b, "  R14=%016x R15=%016x\n", r.R14, r.R15)
	}
	if s != nil {
		fmt.Fprintf(&b, "  CR0=%08x CR2=%016x CR3=%016x CR4=%08x EFER=%x\n", s.CR0, s.CR2, s.CR3, s.CR4, s.EFER)
		fmt.Fprintf(&b, "  CS=%04x base %x L=%d DB=%d  SS=%04x DS=%04x  GDT=%x/%x IDT=%x/%x\n",
			s.CS.Selector, s.CS.Base, s.CS.L, s.CS.DB, s.SS.Selector, s.DS.Selector, s.GDT.Base, s.GDT.Limit, s.IDT.Base, s.IDT.Limit)
	}
	if e.Code != nil {
		fmt.Fprintf(&b, "  code at RIP: % x\n", e.Code)
	}
	if e.StateErr != nil {
		fmt.Fprintf(&b, "  state unavailable: %v\n", e.StateErr)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// LogValue makes the error a group of attributes in structured logs: the
// message, then each register as hex, formatted only when a log record is
// actually written.
func (e *VCPUError) LogValue() slog.Value {
	hex := func(k string, v uint64) slog.Attr { return slog.String(k, fmt.Sprintf("%#x", v)) }
	attrs := []slog.Attr{slog.Int("vcpu", e.VCPU), slog.String("what", e.What)}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	if r := e.Regs; r != nil {
		attrs = append(attrs,
			hex("rip", r.RIP), hex("rflags", r.RFLAGS), hex("rsp", r.RSP), hex("rbp", r.RBP),
			hex("rax", r.RAX), hex("rbx", r.RBX), hex("rcx", r.RCX), hex("rdx", r.RDX),
			hex("rsi", r.RSI), hex("rdi", r.RDI), hex("r8", r.R8), hex("r9", r.R9),
			hex("r10", r.R10), hex("r11", r.R11), hex("r12", r.R12), hex("r13", r.R13),
			hex("r14", r.R14), hex("r15", r.R15))
	}
	if s := e.Sregs; s != nil {
		attrs = append(attrs,
			hex("cr0", s.CR0), hex("cr2", s.CR2), hex("cr3", s.CR3), hex("cr4", s.CR4), hex("efer", s.EFER),
			hex("cs", uint64(s.CS.Selector)), hex("cs_base", s.CS.Base), slog.Bool("cs_long", s.CS.L == 1),
			hex("ss", uint64(s.SS.Selector)), hex("ds", uint64(s.DS.Selector)),
			slog.String("gdt", fmt.Sprintf("%#x/%#x", s.GDT.Base, s.GDT.Limit)),
			slog.String("idt", fmt.Sprintf("%#x/%#x", s.IDT.Base, s.IDT.Limit)))
	}
	if e.Code != nil {
		attrs = append(attrs, slog.String("code", fmt.Sprintf("% x", e.Code)))
	}
	if e.StateErr != nil {
		attrs = append(attrs, slog.String("state_err", e.StateErr.Error()))
	}
	return slog.GroupValue(attrs...)
}
