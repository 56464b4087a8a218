//go:build linux && amd64

// Package sandbox confines a VMM process once its machine is set up, so
// that a guest which finds a flaw in a device lands in a process that can
// do almost nothing: PR_SET_NO_NEW_PRIVS, Landlock (only the files it was
// given), an optional switch to an unprivileged user, no capabilities, and
// a seccomp-bpf allow-list on every thread (allowList, the one list).
//
// Nothing here runs implicitly: the corral CLI calls Apply after New has
// opened every device and before Start runs the vCPUs; a library user who
// wants the same calls it at the same point. It is once per process and
// cannot be undone, so test binaries that run many machines must not.
// See docs/security.md.
package sandbox

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/kvm"
)

// Policy says what Apply does. The zero value is the strictest: seccomp
// enforced, Landlock with no paths at all, capabilities dropped.
type Policy struct {
	// Seccomp is the filter's mode (default SeccompEnforce).
	Seccomp SeccompMode
	// Ioctls are the ioctl requests allowed; nil means DefaultIoctls().
	Ioctls []Ioctl
	// NoLandlock skips Landlock.
	NoLandlock bool
	// ReadPaths and WritePaths are the files and directories (with all
	// beneath them) the process may still open, for reading, or for
	// reading, writing, creating and removing. Each must exist.
	ReadPaths, WritePaths []string
	// User, when set, is the user and group to switch to.
	User *User
	// KeepCaps keeps the process's capabilities.
	KeepCaps bool
	// Logger receives what was applied and what was skipped; nil discards.
	Logger *slog.Logger
}

// Report says what Apply did.
type Report struct {
	Seccomp      SeccompMode
	Landlock     int    // the ABI version in force; 0 when not applied
	LandlockSkip string // why Landlock was not applied, if it was not
	CapsDropped  bool
}

// DefaultIoctls returns the ioctl requests a running machine makes: the
// KVM ones (kvm.RunningIoctls), TUNSETOFFLOAD (the guest's virtio-net
// driver renegotiates offloads), TUNSETQUEUE (it sets how many queue
// pairs of a multi-queue NIC run, which attaches and detaches the TAP's
// queues), and the terminal requests the console uses to restore the
// terminal at exit.
func DefaultIoctls() []Ioctl {
	var out []Ioctl
	for _, r := range kvm.RunningIoctls() {
		out = append(out, Ioctl{Name: r.Name, Request: r.Number})
	}
	return append(out,
		Ioctl{Name: "TUNSETOFFLOAD", Request: unix.TUNSETOFFLOAD},
		Ioctl{Name: "TUNSETQUEUE", Request: unix.TUNSETQUEUE},
		Ioctl{Name: "TCGETS", Request: unix.TCGETS},
		Ioctl{Name: "TCSETS", Request: unix.TCSETS},
		Ioctl{Name: "TCSETSW", Request: unix.TCSETSW},
		Ioctl{Name: "TCSETSF", Request: unix.TCSETSF},
		Ioctl{Name: "TIOCGWINSZ", Request: unix.TIOCGWINSZ},
	)
}

// Apply confines the calling process, in this order: no_new_privs on
// every thread (with seccomp on: just before the filter, on the thread
// installing it, for TSYNC to copy), Landlock (skipped with
// Report.LandlockSkip when the kernel lacks it), the user switch, the
// capability drop, then the seccomp filter synchronized to every thread
// (TSYNC). A forbidden call afterwards prints
// "corral: seccomp: forbidden system call NAME (NR), args ..." on stderr
// and the process dies of SIGSYS. An error leaves the process partly
// confined; the caller should exit.
func Apply(p Policy) (Report, error) {
	return apply(p, func(string) {})
}

// apply is Apply; mark is called as each step ends, with its name, so a
// test can time the steps.
func apply(p Policy, mark func(step string)) (Report, error) {
	log := p.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	rep := Report{Seccomp: p.Seccomp}
	// Files the standard library opens lazily, on first use, are opened
	// now, while Landlock and seccomp still allow it.
	time.Now().Local().Zone()
	mark("zone")

	// no_new_privs must end up on every thread. Without a filter that
	// takes one stop-the-world pass now; with one, seccomp's TSYNC copies
	// it from the installing thread to every other (kernel/seccomp.c,
	// seccomp_sync_threads), so it goes on that thread only, below.
	nnpAll := p.Seccomp == SeccompOff
	if nnpAll {
		if err := setNoNewPrivs(); err != nil {
			return rep, err
		}
		mark("no_new_privs")
	}
	if p.NoLandlock {
		rep.LandlockSkip = "turned off"
	} else {
		abi, err := applyLandlock(p.ReadPaths, p.WritePaths)
		if errors.Is(err, errLandlockNeedsNNP) && !nnpAll {
			// Each thread's landlock_restrict_self needs no_new_privs or
			// CAP_SYS_ADMIN; this process lacks the capability.
			if err = setNoNewPrivs(); err == nil {
				nnpAll = true // and not again below
				abi, err = applyLandlock(p.ReadPaths, p.WritePaths)
			}
		}
		switch {
		case errors.Is(err, ErrNoLandlock), errors.Is(err, ErrAllThreads):
			rep.LandlockSkip = err.Error()
			log.Warn("sandbox.landlock_skipped", "reason", err.Error())
		case err != nil:
			return rep, err
		default:
			rep.Landlock = abi
		}
		mark("landlock")
	}
	if p.User != nil {
		if err := switchUser(*p.User); err != nil {
			return rep, err
		}
		mark("user")
	}
	if !p.KeepCaps {
		if err := dropCapabilities(); err != nil {
			return rep, err
		}
		rep.CapsDropped = true
		mark("caps")
	}
	if p.Seccomp != SeccompOff {
		prog := defaultProgram(p.Seccomp, os.Getpid())
		if p.Ioctls != nil {
			var err error
			prog, err = Filter{Mode: p.Seccomp, Ioctls: p.Ioctls, PID: os.Getpid()}.Program()
			if err != nil {
				return rep, err
			}
		}
		mark("program")
		if !nnpAll {
			// Not before Landlock: with no_new_privs on only some
			// threads, a process without CAP_SYS_ADMIN would pass
			// landlock_restrict_self on this thread and fail it on the
			// others, which the runtime cannot undo. The thread stays
			// this goroutine's until the filter is in; locking it starts
			// the runtime's template thread, which the vCPUs' locking
			// would start anyway, after the passes over every thread.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := setNoNewPrivsHere(); err != nil {
				return rep, err
			}
			mark("no_new_privs_here")
		}
		if err := installSIGSYSHandler(); err != nil {
			return rep, err
		}
		if err := installFilter(prog); err != nil {
			return rep, err
		}
		mark("seccomp")
	}
	log.Info("sandbox.applied", "seccomp", p.Seccomp.String(), "landlock_abi", rep.Landlock,
		"caps_dropped", rep.CapsDropped, "user", userString(p.User), "took", time.Since(start))
	return rep, nil
}

func userString(u *User) string {
	if u == nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", u.UID, u.GID)
}
