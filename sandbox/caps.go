//go:build linux && amd64

package sandbox

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrAllThreads is returned when a per-thread setting (capabilities,
// Landlock) cannot be applied to every thread: syscall.AllThreadsSyscall
// needs a binary built without cgo (CGO_ENABLED=0).
var ErrAllThreads = errors.New("sandbox: cannot apply a per-thread setting to every thread in a cgo binary (build with CGO_ENABLED=0)")

// allThreads runs one system call on every thread; Linux keeps
// capabilities, no_new_privs and Landlock domains per thread.
func allThreads(what string, trap, a1, a2, a3 uintptr) error {
	_, _, e := syscall.AllThreadsSyscall(trap, a1, a2, a3)
	if e == syscall.ENOTSUP {
		return fmt.Errorf("%s: %w", what, ErrAllThreads)
	}
	if e != 0 {
		return fmt.Errorf("sandbox: %s: %w", what, e)
	}
	return nil
}

// setNoNewPrivs sets no_new_privs on every thread when it can, else on
// this one (seccomp's TSYNC then copies it to the others).
func setNoNewPrivs() error {
	err := allThreads("prctl PR_SET_NO_NEW_PRIVS", unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0)
	if errors.Is(err, ErrAllThreads) {
		return setNoNewPrivsHere()
	}
	return err
}

// setNoNewPrivsHere sets no_new_privs on the calling thread only: enough
// when a seccomp filter follows, since TSYNC sets no_new_privs on every
// thread it synchronizes when the caller has it (kernel/seccomp.c,
// seccomp_sync_threads), and it saves a stop-the-world pass over every
// thread.
func setNoNewPrivsHere() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("sandbox: prctl PR_SET_NO_NEW_PRIVS: %w", err)
	}
	return nil
}

// User is the unprivileged identity to switch to.
type User struct {
	UID, GID int
}

// switchUser sets the real, effective and saved IDs and the supplementary
// groups to u, on every thread (Go's syscall.Set* do all threads).
func switchUser(u User) error {
	if err := syscall.Setgroups([]int{u.GID}); err != nil {
		return fmt.Errorf("sandbox: setgroups %d: %w", u.GID, err)
	}
	if err := syscall.Setresgid(u.GID, u.GID, u.GID); err != nil {
		return fmt.Errorf("sandbox: setresgid %d: %w", u.GID, err)
	}
	if err := syscall.Setresuid(u.UID, u.UID, u.UID); err != nil {
		return fmt.Errorf("sandbox: setresuid %d: %w", u.UID, err)
	}
	return nil
}

// dropCapabilities empties the effective, permitted and inheritable sets
// of every thread; the kernel empties the ambient set with them. The
// bounding set is left: it only limits what execve may grant, and with
// no_new_privs (always set first) execve grants nothing beyond the now
// empty permitted set. Shrinking it would take one stop-the-world
// AllThreadsSyscall per capability (41), tens of milliseconds under
// emulation, for no gain.
func dropCapabilities() error {
	return capsetZero()
}

// AllThreadsSupported reports whether per-thread settings can reach every
// thread: false in a cgo binary (then Landlock is skipped and dropping
// capabilities fails with ErrAllThreads).
func AllThreadsSupported() bool {
	_, _, e := syscall.AllThreadsSyscall(unix.SYS_GETPID, 0, 0, 0)
	return e != syscall.ENOTSUP
}
