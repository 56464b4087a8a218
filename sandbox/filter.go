//go:build linux && amd64

package sandbox

import (
	"cmp"
	"fmt"
	"slices"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Ioctl is an ioctl request the filter lets through.
type Ioctl struct {
	Name    string
	Request uintptr
}

// SeccompMode selects what the filter does with a call off the allow-list.
type SeccompMode int

const (
	// SeccompEnforce stops the process: the call traps, and the SIGSYS
	// handler names it on stderr before the process dies of SIGSYS.
	SeccompEnforce SeccompMode = iota
	// SeccompLog lets the call run and has the kernel log it (audit or
	// dmesg: type=1326 ... syscall=N), to find what an allow-list lacks.
	SeccompLog
	// SeccompOff installs no filter.
	SeccompOff
)

// String returns the mode as --seccomp spells it.
func (m SeccompMode) String() string {
	switch m {
	case SeccompEnforce:
		return "on"
	case SeccompLog:
		return "log"
	case SeccompOff:
		return "off"
	}
	return fmt.Sprintf("SeccompMode(%d)", int(m))
}

// denyAction is the filter's return for a call off the allow-list.
func (m SeccompMode) denyAction() uint32 {
	if m == SeccompLog {
		return unix.SECCOMP_RET_LOG
	}
	return unix.SECCOMP_RET_TRAP
}

// ParseSeccompMode parses --seccomp's on, log or off.
func ParseSeccompMode(s string) (SeccompMode, error) {
	for _, m := range []SeccompMode{SeccompEnforce, SeccompLog, SeccompOff} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("seccomp mode %q: want on, log or off", s)
}

// Filter is the input of the generated seccomp program.
type Filter struct {
	Mode SeccompMode
	// Ioctls are the only ioctl requests allowed.
	Ioctls []Ioctl
	// PID is the process's own pid, the only target of kill and tgkill.
	PID int
}

// seccomp_data offsets (linux/seccomp.h): nr, arch, instruction_pointer,
// args[6], all native-endian.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

// x32 system calls on x86-64 have this bit set in nr; none is allowed.
const x32SyscallBit = 0x40000000

// syscallNumbers returns the x86-64 numbers of the system calls by name.
func syscallNumbers() map[string]int {
	m := make(map[string]int, len(syscallNames))
	for nr, n := range syscallNames {
		if n != "" {
			m[n] = nr
		}
	}
	return m
}

// SyscallName returns the name of an x86-64 system call number, or
// "syscall N" for a number the table lacks.
func SyscallName(nr int) string {
	if nr >= 0 && nr < len(syscallNames) && syscallNames[nr] != "" {
		return syscallNames[nr]
	}
	return fmt.Sprintf("syscall %d", nr)
}

// Program returns the seccomp BPF program for f: the architecture check,
// allowList's first rule (ioctl: KVM_RUN runs the program on every call),
// then the other rules found by binary search on the call number, and the
// deny action for numbers no rule names. The kernel runs the program for
// every call number when it installs it, to cache the verdicts that do not
// depend on arguments; a search keeps that to a few instructions a number
// where a chain of the ~150 rules took hundreds (a third of Apply's time).
func (f Filter) Program() ([]bpf.RawInstruction, error) {
	deny := f.Mode.denyAction()
	const allow = unix.SECCOMP_RET_ALLOW
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_KILL_PROCESS},
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
		bpf.RetConstant{Val: deny},
	}
	var rules []numberedRule
	seen := map[int]bool{}
	numbers := syscallNumbers()
	for _, r := range allowList(f) {
		nr, ok := numbers[r.name]
		if !ok {
			return nil, fmt.Errorf("sandbox: allow-list names unknown system call %q", r.name)
		}
		if seen[nr] {
			return nil, fmt.Errorf("sandbox: allow-list names %q twice", r.name)
		}
		seen[nr] = true
		body, err := r.body(allow, deny)
		if err != nil {
			return nil, err
		}
		rules = append(rules, numberedRule{uint32(nr), body})
	}
	if len(rules) > 0 {
		prog = append(prog, rules[0].test()...)
		rules = rules[1:]
	}
	slices.SortFunc(rules, func(a, b numberedRule) int { return cmp.Compare(a.nr, b.nr) })
	prog = append(prog, searchRules(rules, deny)...)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("sandbox: assemble seccomp filter: %w", err)
	}
	if len(raw) > bpfMaxInsns {
		return nil, fmt.Errorf("sandbox: seccomp filter is %d instructions; the kernel takes %d", len(raw), bpfMaxInsns)
	}
	return raw, nil
}

// numberedRule is a rule's call number and the instructions run when a
// call has it.
type numberedRule struct {
	nr   uint32
	body []bpf.Instruction
}

// test returns the rule's body behind a test of the call number in A. The
// body ends in a return; other calls go on to the next instruction, A
// still the number. Bodies are at most 253 instructions (argIn's limit).
func (r numberedRule) test() []bpf.Instruction {
	return append([]bpf.Instruction{bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: r.nr, SkipTrue: uint8(len(r.body))}}, r.body...)
}

// searchRules returns instructions that, with the call number in A, run
// the body of the rule in rules (sorted by number) that has it, or return
// deny: a binary search down to runs of a few rules tested in turn.
func searchRules(rules []numberedRule, deny uint32) []bpf.Instruction {
	if len(rules) <= 4 {
		var out []bpf.Instruction
		for _, r := range rules {
			out = append(out, r.test()...)
		}
		return append(out, bpf.RetConstant{Val: deny})
	}
	mid := len(rules) / 2
	lo, hi := searchRules(rules[:mid], deny), searchRules(rules[mid:], deny)
	if len(lo) <= 255 {
		return slices.Concat([]bpf.Instruction{bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: rules[mid].nr, SkipTrue: uint8(len(lo))}}, lo, hi)
	}
	// Too far for a conditional jump (8 bits): hop over lo with ja.
	return slices.Concat([]bpf.Instruction{
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: rules[mid].nr, SkipFalse: 1},
		bpf.Jump{Skip: uint32(len(lo))},
	}, lo, hi)
}

// bpfMaxInsns is BPF_MAXINSNS, the kernel's limit on a classic program.
const bpfMaxInsns = 4096

// body returns the instructions run when the call number matches r.
func (r rule) body(allow, deny uint32) ([]bpf.Instruction, error) {
	if r.arg < 0 || r.arg > 5 {
		return nil, fmt.Errorf("sandbox: rule %s: argument %d out of range", r.name, r.arg)
	}
	load := bpf.LoadAbsolute{Off: offArgs + 8*uint32(r.arg), Size: 4} // low half (little-endian)
	switch r.op {
	case anyArgs:
		return []bpf.Instruction{bpf.RetConstant{Val: allow}}, nil
	case errnoRet:
		return []bpf.Instruction{bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(r.errno)}}, nil
	case argHas:
		return []bpf.Instruction{load,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: r.mask, SkipTrue: 1},
			bpf.RetConstant{Val: deny},
			bpf.RetConstant{Val: allow}}, nil
	case argLacks:
		return []bpf.Instruction{load,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: r.mask, SkipTrue: 1},
			bpf.RetConstant{Val: allow},
			bpf.RetConstant{Val: deny}}, nil
	case argIn:
		// Values v0..vn-1, then deny at n and allow at n+1: vj jumps n-j.
		n := len(r.vals)
		if n > 250 {
			return nil, fmt.Errorf("sandbox: rule %s: %d values; at most 250 fit one jump", r.name, n)
		}
		b := []bpf.Instruction{load}
		for j, v := range r.vals {
			b = append(b, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipTrue: uint8(n - j)})
		}
		return append(b, bpf.RetConstant{Val: deny}, bpf.RetConstant{Val: allow}), nil
	}
	return nil, fmt.Errorf("sandbox: rule %s: unknown argument check %d", r.name, r.op)
}
