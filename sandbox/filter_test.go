//go:build linux && amd64

package sandbox

import (
	"encoding/binary"
	"os"
	"slices"
	"testing"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// seccompData is struct seccomp_data for the BPF interpreter. x/net/bpf's
// VM loads words big-endian (network order) where the kernel loads them
// native-endian, so every 32-bit word is stored big-endian: the program
// then sees the values the kernel would show it.
func seccompData(arch uint32, nr int, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[offNr:], uint32(nr))
	binary.BigEndian.PutUint32(b[offArch:], arch)
	for i, a := range args {
		off := offArgs + 8*i
		binary.BigEndian.PutUint32(b[off:], uint32(a))       // low half first, as on x86-64
		binary.BigEndian.PutUint32(b[off+4:], uint32(a>>32)) // then the high half
	}
	return b
}

func runFilter(t *testing.T, f Filter, arch uint32, nr int, args ...uint64) uint32 {
	t.Helper()
	raw, err := f.Program()
	if err != nil {
		t.Fatal(err)
	}
	prog, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("program has instructions the interpreter does not know")
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatalf("NewVM: %v", err)
	}
	v, err := vm.Run(seccompData(arch, nr, args...))
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return uint32(v)
}

func TestFilterVerdicts(t *testing.T) {
	const pid = 4242
	f := Filter{Ioctls: DefaultIoctls(), PID: pid}
	kvmRun := uint64(0xAE80)
	const (
		allow = unix.SECCOMP_RET_ALLOW
		trap  = unix.SECCOMP_RET_TRAP
	)
	cases := []struct {
		what string
		nr   int
		args []uint64
		want uint32
	}{
		{"read", unix.SYS_READ, nil, allow},
		{"futex", unix.SYS_FUTEX, nil, allow},
		{"execve", unix.SYS_EXECVE, nil, trap},
		{"execveat", unix.SYS_EXECVEAT, nil, trap},
		{"ptrace", unix.SYS_PTRACE, nil, trap},
		{"fork", unix.SYS_FORK, nil, trap},
		{"vfork", unix.SYS_VFORK, nil, trap},
		{"mount", unix.SYS_MOUNT, nil, trap},
		{"bpf", unix.SYS_BPF, nil, trap},
		{"seccomp", unix.SYS_SECCOMP, nil, trap},
		{"capset", unix.SYS_CAPSET, nil, trap},
		{"setuid", unix.SYS_SETUID, nil, trap},
		{"prctl", unix.SYS_PRCTL, nil, trap},
		{"process_vm_writev", unix.SYS_PROCESS_VM_WRITEV, nil, trap},
		{"ioctl KVM_RUN", unix.SYS_IOCTL, []uint64{5, kvmRun}, allow},
		{"ioctl KVM_RUN high bits (ignored by the kernel)", unix.SYS_IOCTL, []uint64{5, 1<<32 | kvmRun}, allow},
		{"ioctl TUNSETOFFLOAD", unix.SYS_IOCTL, []uint64{5, unix.TUNSETOFFLOAD}, allow},
		{"ioctl TUNSETQUEUE", unix.SYS_IOCTL, []uint64{5, unix.TUNSETQUEUE}, allow}, // a multi-queue NIC's VQ_PAIRS_SET
		{"ioctl TIOCGWINSZ", unix.SYS_IOCTL, []uint64{0, unix.TIOCGWINSZ}, allow},
		{"ioctl KVM_CREATE_VM", unix.SYS_IOCTL, []uint64{5, 0xAE01}, trap},
		{"ioctl KVM_SET_USER_MEMORY_REGION", unix.SYS_IOCTL, []uint64{5, 0x4020AE46}, trap},
		{"ioctl TUNSETIFF", unix.SYS_IOCTL, []uint64{5, unix.TUNSETIFF}, trap},
		{"ioctl TIOCSTI", unix.SYS_IOCTL, []uint64{0, unix.TIOCSTI}, trap},
		{"socket AF_UNIX", unix.SYS_SOCKET, []uint64{unix.AF_UNIX, unix.SOCK_STREAM}, allow},
		{"socket AF_INET", unix.SYS_SOCKET, []uint64{unix.AF_INET, unix.SOCK_STREAM}, trap},
		{"socket AF_INET6", unix.SYS_SOCKET, []uint64{unix.AF_INET6, unix.SOCK_DGRAM}, trap},
		{"socket AF_NETLINK", unix.SYS_SOCKET, []uint64{unix.AF_NETLINK, unix.SOCK_RAW}, trap},
		{"socket AF_PACKET", unix.SYS_SOCKET, []uint64{unix.AF_PACKET, unix.SOCK_RAW}, trap},
		{"socket AF_VSOCK", unix.SYS_SOCKET, []uint64{unix.AF_VSOCK, unix.SOCK_STREAM}, trap},
		{"socketpair AF_INET", unix.SYS_SOCKETPAIR, []uint64{unix.AF_INET}, trap},
		{"clone thread", unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_SYSVSEM | unix.CLONE_THREAD}, allow},
		{"clone process", unix.SYS_CLONE, []uint64{unix.CLONE_VM | unix.CLONE_VFORK | uint64(unix.SIGCHLD)}, trap},
		{"clone3", unix.SYS_CLONE3, nil, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"mmap rw", unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_WRITE}, allow},
		{"mmap exec", unix.SYS_MMAP, []uint64{0, 4096, unix.PROT_READ | unix.PROT_EXEC}, trap},
		{"mprotect exec", unix.SYS_MPROTECT, []uint64{0, 4096, unix.PROT_EXEC}, trap},
		{"tgkill self", unix.SYS_TGKILL, []uint64{pid, 7, uint64(unix.SIGURG)}, allow},
		{"tgkill other", unix.SYS_TGKILL, []uint64{1, 1, uint64(unix.SIGKILL)}, trap},
		{"kill other", unix.SYS_KILL, []uint64{1, uint64(unix.SIGKILL)}, trap},
		{"kill all", unix.SYS_KILL, []uint64{^uint64(0), uint64(unix.SIGKILL)}, trap},
		{"x32 read", unix.SYS_READ | x32SyscallBit, nil, trap},
		{"unknown number", 1000, nil, trap},
	}
	for _, c := range cases {
		if got := runFilter(t, f, unix.AUDIT_ARCH_X86_64, c.nr, c.args...); got != c.want {
			t.Errorf("%s: got %#x, want %#x", c.what, got, c.want)
		}
	}
	if got := runFilter(t, f, unix.AUDIT_ARCH_I386, unix.SYS_READ); got != unix.SECCOMP_RET_KILL_PROCESS {
		t.Errorf("i386 call: got %#x, want KILL_PROCESS", got)
	}
	f.Mode = SeccompLog
	if got := runFilter(t, f, unix.AUDIT_ARCH_X86_64, unix.SYS_EXECVE); got != unix.SECCOMP_RET_LOG {
		t.Errorf("execve in log mode: got %#x, want RET_LOG", got)
	}
}

// Every rule of the allow-list, with arguments its check accepts, is
// allowed: a typo in a name or a mis-sized jump would show here.
func TestFilterAllowsEveryRule(t *testing.T) {
	f := Filter{Ioctls: DefaultIoctls(), PID: 99}
	numbers := syscallNumbers()
	for _, r := range allowList(f) {
		nr, ok := numbers[r.name]
		if !ok {
			t.Errorf("%s: not a system call", r.name)
			continue
		}
		if r.why == "" {
			t.Errorf("%s: no reason given", r.name)
		}
		args := make([]uint64, 6)
		want := uint32(unix.SECCOMP_RET_ALLOW)
		switch r.op {
		case argHas:
			args[r.arg] = uint64(r.mask)
		case errnoRet:
			want = unix.SECCOMP_RET_ERRNO | uint32(r.errno)
		case argIn:
			for _, v := range r.vals {
				args[r.arg] = uint64(v)
				if got := runFilter(t, f, unix.AUDIT_ARCH_X86_64, nr, args...); got != want {
					t.Errorf("%s(arg%d=%#x): got %#x, want allow", r.name, r.arg, v, got)
				}
			}
			continue
		}
		if got := runFilter(t, f, unix.AUDIT_ARCH_X86_64, nr, args...); got != want {
			t.Errorf("%s: got %#x, want %#x", r.name, got, want)
		}
	}
}

func TestSyscallNames(t *testing.T) {
	for nr, want := range map[int]string{unix.SYS_READ: "read", unix.SYS_EXECVE: "execve", unix.SYS_IOCTL: "ioctl",
		unix.SYS_OPENAT2: "openat2", unix.SYS_LANDLOCK_RESTRICT_SELF: "landlock_restrict_self"} {
		if got := SyscallName(nr); got != want {
			t.Errorf("SyscallName(%d) = %q, want %q", nr, got, want)
		}
	}
	if got := SyscallName(9999); got != "syscall 9999" {
		t.Errorf("SyscallName(9999) = %q", got)
	}
}

func TestParseSeccompMode(t *testing.T) {
	for _, s := range []string{"on", "log", "off"} {
		m, err := ParseSeccompMode(s)
		if err != nil || m.String() != s {
			t.Errorf("ParseSeccompMode(%q) = %v, %v", s, m, err)
		}
	}
	if _, err := ParseSeccompMode("yes"); err == nil {
		t.Error("ParseSeccompMode(yes) accepted")
	}
}

// The generated default program (program_linux_amd64.go) is what Program
// makes now, whatever the pid and mode: regenerate it with go generate
// ./sandbox when this fails.
func TestDefaultProgramCurrent(t *testing.T) {
	for _, mode := range []SeccompMode{SeccompEnforce, SeccompLog} {
		for _, pid := range []int{1, 2, 4242, os.Getpid(), 1<<22 - 1, 0x7fffffff} {
			want, err := Filter{Mode: mode, Ioctls: DefaultIoctls(), PID: pid}.Program()
			if err != nil {
				t.Fatal(err)
			}
			if got := defaultProgram(mode, pid); !slices.Equal(got, want) {
				t.Fatalf("mode %v pid %d: the generated program (%d instructions) is not Program's (%d): run go generate ./sandbox", mode, pid, len(got), len(want))
			}
		}
	}
}

// constPath returns how many instructions of raw run for call nr before a
// return or a load of an argument: what the kernel emulates for every
// number when it installs a filter, to cache the verdicts that do not
// depend on arguments (seccomp_cache_prepare_bitmap).
func constPath(t *testing.T, raw []bpf.RawInstruction, nr uint32) int {
	t.Helper()
	var a uint32
	for pc, n := 0, 1; pc < len(raw); n++ {
		in := raw[pc]
		switch {
		case in.Op == unix.BPF_LD|unix.BPF_W|unix.BPF_ABS && in.K == offNr:
			a = nr
		case in.Op == unix.BPF_LD|unix.BPF_W|unix.BPF_ABS && in.K == offArch:
			a = unix.AUDIT_ARCH_X86_64
		case in.Op&0x07 == unix.BPF_LD, in.Op&0x07 == unix.BPF_RET:
			return n
		case in.Op == unix.BPF_JMP|unix.BPF_JA:
			pc += int(in.K)
		case in.Op&0x07 == unix.BPF_JMP:
			var taken bool
			switch in.Op &^ 0x07 {
			case unix.BPF_JEQ | unix.BPF_K:
				taken = a == in.K
			case unix.BPF_JGT | unix.BPF_K:
				taken = a > in.K
			case unix.BPF_JGE | unix.BPF_K:
				taken = a >= in.K
			case unix.BPF_JSET | unix.BPF_K:
				taken = a&in.K != 0
			default:
				t.Fatalf("instruction %d: jump %#x", pc, in.Op)
			}
			if taken {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		default:
			t.Fatalf("instruction %d: op %#x", pc, in.Op)
		}
		pc++
	}
	t.Fatalf("call %d runs off the end of the program", nr)
	return 0
}

// Every call number is decided (or reaches its argument check) within a
// few instructions: the kernel runs the program for each of them when it
// installs it, and a chain of the whole list made that a third of the
// time Apply took.
func TestFilterSearchIsShort(t *testing.T) {
	raw, err := Filter{Ioctls: DefaultIoctls(), PID: 99}.Program()
	if err != nil {
		t.Fatal(err)
	}
	longest, total := 0, 0
	for nr := range uint32(len(syscallNames) + 64) {
		n := constPath(t, raw, nr)
		longest, total = max(longest, n), total+n
	}
	t.Logf("%d instructions; longest path %d, mean %.1f", len(raw), longest, float64(total)/float64(len(syscallNames)+64))
	if longest > 24 {
		t.Errorf("a call number takes %d instructions to decide, want at most 24", longest)
	}
}

// The program's verdict for every call number is the allow-list's, with
// arguments each rule accepts and with arguments it refuses.
func TestFilterMatchesList(t *testing.T) {
	const pid = 77
	f := Filter{Ioctls: DefaultIoctls(), PID: pid}
	byNr := map[int]rule{}
	numbers := syscallNumbers()
	for _, r := range allowList(f) {
		byNr[numbers[r.name]] = r
	}
	const allow, deny = unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_TRAP
	for nr := range len(syscallNames) + 64 {
		r, ok := byNr[nr]
		type try struct {
			arg  uint32
			want uint32
		}
		var tries []try
		switch {
		case !ok:
			tries = []try{{0, deny}}
		case r.op == anyArgs:
			tries = []try{{0, allow}, {^uint32(0), allow}}
		case r.op == errnoRet:
			tries = []try{{0, unix.SECCOMP_RET_ERRNO | uint32(r.errno)}}
		case r.op == argHas:
			tries = []try{{r.mask, allow}, {0, deny}}
		case r.op == argLacks:
			tries = []try{{0, allow}, {r.mask, deny}}
		case r.op == argIn:
			for _, v := range r.vals {
				tries = append(tries, try{v, allow})
			}
			if !slices.Contains(r.vals, 0xdead) {
				tries = append(tries, try{0xdead, deny})
			}
		}
		for _, c := range tries {
			args := make([]uint64, 6)
			if ok {
				args[r.arg] = uint64(c.arg)
			}
			if got := runFilter(t, f, unix.AUDIT_ARCH_X86_64, nr, args...); got != c.want {
				t.Errorf("%s with argument %#x: got %#x, want %#x", SyscallName(nr), c.arg, got, c.want)
			}
		}
	}
}
