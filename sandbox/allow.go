//go:build linux && amd64

package sandbox

import "golang.org/x/sys/unix"

// argOp is how a rule looks at one argument. Only the low 32 bits are
// compared: every argument checked here is an int or unsigned int to the
// kernel (ioctl's request, socket's family, a pid, prot and clone flags fit
// too), and the kernel ignores the high half of those.
type argOp int

const (
	anyArgs  argOp = iota // allowed whatever the arguments
	argIn                 // allowed when the argument is one of vals
	argHas                // allowed when the argument has a bit of mask set
	argLacks              // allowed when the argument has no bit of mask set
	errnoRet              // not run: fails with errno, as if the kernel lacked it
)

// rule is one entry of the allow-list: a system call by name, with the
// argument check that lets it through and why Corral needs it.
type rule struct {
	name  string
	op    argOp
	arg   int      // which argument (0-5) op looks at
	vals  []uint32 // argIn
	mask  uint32   // argHas, argLacks
	errno unix.Errno
	why   string
}

// allowList is THE list: every system call the VMM process may make after
// setup, for the Go runtime and for Corral's devices. Everything else
// (execve, ptrace, fork, mount, bpf, new TCP/UDP sockets, ...) is denied.
// ioctl requests and the pid for kill come from the Filter. ioctl stays
// first: the program tests the first rule before searching the rest by
// number, and while the kernel caches the verdict of calls allowed
// whatever their arguments, ioctl (KVM_RUN) runs the program every time.
func allowList(f Filter) []rule {
	ioctls := make([]uint32, len(f.Ioctls))
	for i, io := range f.Ioctls {
		ioctls[i] = uint32(io.Request)
	}
	pid := []uint32{uint32(f.PID)}
	return []rule{
		{name: "ioctl", op: argIn, arg: 1, vals: ioctls, why: "KVM_RUN and the KVM, TAP and terminal requests a running machine makes"},
		{name: "futex", why: "Go runtime: locks and sleeping"},
		{name: "read", why: "devices, TAP, sockets, console"},
		{name: "write", why: "devices, TAP, sockets, console, logs"},
		{name: "epoll_pwait", why: "Go runtime network poller"},
		{name: "epoll_pwait2", why: "Go runtime network poller"},
		{name: "epoll_wait", why: "Go runtime network poller"},
		{name: "epoll_ctl", why: "Go runtime network poller"},
		{name: "epoll_create1", why: "Go runtime network poller"},
		{name: "nanosleep", why: "Go runtime: usleep"},
		{name: "clock_nanosleep", why: "Go runtime"},
		{name: "sched_yield", why: "Go runtime: osyield"},
		{name: "tgkill", op: argIn, arg: 0, vals: pid, why: "Go runtime: preemption signals to its own threads only"},
		{name: "kill", op: argIn, arg: 0, vals: pid, why: "signals to this process only (a second Ctrl-C re-raises)"},
		{name: "gettid", why: "Go runtime"},
		{name: "getpid", why: "Go runtime"},
		{name: "getppid", why: "parent-death checks"},
		{name: "rt_sigaction", why: "Go runtime and os/signal"},
		{name: "rt_sigprocmask", why: "Go runtime"},
		{name: "rt_sigreturn", why: "Go runtime: return from signal handlers"},
		{name: "sigaltstack", why: "Go runtime: every new thread"},
		{name: "restart_syscall", why: "kernel restarts interrupted sleeps"},
		{name: "clone", op: argHas, arg: 0, mask: unix.CLONE_THREAD, why: "Go runtime: new threads only, never a new process"},
		{name: "clone3", op: errnoRet, errno: unix.ENOSYS, why: "flags live in memory a filter cannot read; Go falls back to clone"},
		{name: "rseq", why: "glibc registers every new thread in cgo binaries (fatal if refused once the main thread has)"},
		{name: "set_robust_list", why: "glibc, on new threads in cgo binaries"},
		{name: "exit", why: "Go runtime: thread exit"},
		{name: "exit_group", why: "process exit"},
		{name: "mmap", op: argLacks, arg: 2, mask: unix.PROT_EXEC, why: "Go runtime heap; never executable"},
		{name: "mprotect", op: argLacks, arg: 2, mask: unix.PROT_EXEC, why: "never executable"},
		{name: "munmap", why: "Go runtime heap, vCPU run pages"},
		{name: "madvise", why: "Go runtime heap scavenger"},
		{name: "sched_getaffinity", why: "Go runtime"},
		{name: "getrandom", why: "crypto/rand, map seeds"},
		{name: "clock_gettime", why: "time (when the vDSO is not used)"},
		{name: "gettimeofday", why: "time (when the vDSO is not used)"},
		{name: "timer_create", why: "Go runtime CPU profiler timers"},
		{name: "timer_settime", why: "Go runtime CPU profiler timers"},
		{name: "timer_delete", why: "Go runtime CPU profiler timers"},
		{name: "setitimer", why: "Go runtime CPU profiler"},
		{name: "eventfd2", why: "Go poller wakeups, virtio notify and irqfd eventfds"},
		{name: "pipe2", why: "console and vsock plumbing"},
		{name: "close", why: "everything"},
		{name: "fcntl", why: "non-blocking and close-on-exec flags, locks"},
		{name: "dup", why: "console copies"},
		{name: "dup3", why: "console copies"},
		{name: "ppoll", why: "terminal input waits; virtio-net backend and receive-loop waits"},
		{name: "readv", why: "TAP frames"},
		{name: "writev", why: "TAP frames, journal"},
		{name: "pread64", why: "virtio-blk, 9p"},
		{name: "pwrite64", why: "virtio-blk, 9p"},
		{name: "preadv", why: "virtio-blk scatter reads"},
		{name: "pwritev", why: "virtio-blk scatter writes"},
		{name: "lseek", why: "9p, files"},
		{name: "fsync", why: "virtio-blk flush, audit trail"},
		{name: "fdatasync", why: "virtio-blk flush"},
		{name: "fallocate", why: "virtio-blk discard and write-zeroes"},
		{name: "ftruncate", why: "9p setattr size, inventory records"},
		{name: "truncate", why: "9p setattr size"},
		{name: "flock", why: "disk image and inventory locks"},
		{name: "fstat", why: "files"},
		{name: "newfstatat", why: "files, 9p"},
		{name: "statx", why: "files, 9p"},
		{name: "fstatfs", why: "9p statfs"},
		{name: "statfs", why: "9p statfs"},
		{name: "openat", why: "9p shares, inventory and audit files (paths confined by Landlock)"},
		{name: "openat2", why: "9p opens beneath a share (RESOLVE_BENEATH)"},
		{name: "getdents64", why: "9p readdir, inventory"},
		{name: "readlinkat", why: "9p readlink"},
		{name: "getcwd", why: "absolute paths for the inventory"},
		{name: "umask", why: "the control socket is created 0600 under umask 0177"},
		{name: "mkdirat", why: "9p mkdir, inventory directory"},
		{name: "mknodat", why: "9p mknod (fifos and sockets; devices need a capability that is gone)"},
		{name: "unlinkat", why: "9p remove, vsock socket and inventory cleanup"},
		{name: "renameat", why: "9p rename, inventory record replacement"},
		{name: "renameat2", why: "9p rename, inventory record replacement"},
		{name: "linkat", why: "9p link"},
		{name: "symlinkat", why: "9p symlink"},
		{name: "fchmod", why: "9p setattr"},
		{name: "fchmodat", why: "9p setattr, socket modes"},
		{name: "fchmodat2", why: "9p setattr"},
		{name: "fchown", why: "9p setattr"},
		{name: "fchownat", why: "9p setattr"},
		{name: "utimensat", why: "9p setattr times"},
		{name: "fgetxattr", why: "9p xattrs"},
		{name: "fsetxattr", why: "9p xattrs"},
		{name: "flistxattr", why: "9p xattrs"},
		{name: "fremovexattr", why: "9p xattrs"},
		{name: "lgetxattr", why: "9p xattrs"},
		{name: "lsetxattr", why: "9p xattrs"},
		{name: "llistxattr", why: "9p xattrs"},
		{name: "lremovexattr", why: "9p xattrs"},
		{name: "getxattr", why: "9p xattrs"},
		{name: "setxattr", why: "9p xattrs"},
		{name: "listxattr", why: "9p xattrs"},
		{name: "removexattr", why: "9p xattrs"},
		{name: "memfd_create", why: "journal records too large for one datagram"},
		{name: "socket", op: argIn, arg: 0, vals: []uint32{unix.AF_UNIX}, why: "Unix sockets only: vsock forwarding, the control socket, the journal"},
		{name: "socketpair", op: argIn, arg: 0, vals: []uint32{unix.AF_UNIX}, why: "Unix socket pairs only"},
		{name: "connect", why: "vsock UDS forwarding, journal (new sockets are Unix only)"},
		{name: "bind", why: "control socket (Unix only)"},
		{name: "listen", why: "control socket, vsock UDS"},
		{name: "accept4", why: "control socket, vsock UDS"},
		{name: "getsockname", why: "sockets"},
		{name: "getpeername", why: "sockets"},
		{name: "getsockopt", why: "SO_PEERCRED on the control socket, SO_ERROR"},
		{name: "setsockopt", why: "socket buffers and timeouts"},
		{name: "sendto", why: "socket backends"},
		{name: "recvfrom", why: "socket backends"},
		{name: "sendmsg", why: "journal, fd passing"},
		{name: "recvmsg", why: "socket backends"},
		{name: "shutdown", why: "vsock half-close"},
		{name: "getuid", why: "inventory and audit ownership"},
		{name: "geteuid", why: "inventory and audit ownership"},
		{name: "getgid", why: "inventory and audit ownership"},
		{name: "getegid", why: "inventory and audit ownership"},
		{name: "getgroups", why: "9p permission checks"},
		{name: "capget", why: "read-only capability queries"},
		{name: "uname", why: "Go runtime and os"},
		{name: "sysinfo", why: "memory checks"},
		{name: "prlimit64", why: "Go runtime and os (read only in practice)"},
	}
}
