package main

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// parentDeathSignal is what `corral run` gets when its parent dies:
// SIGTERM, which stops the machine as a signal from the user does (the
// audit trail then says vm.ended, and TAPs and locks are released), so a
// CI runner that crashes leaves no VM behind.
const parentDeathSignal = syscall.SIGTERM

// init arms the parent-death signal for `corral run` and `corral exec`.
// It runs in init because Go runs package initialisation on the main
// thread, and PR_SET_PDEATHSIG belongs to the calling thread: set from a
// thread the runtime may later end, it would be lost. (The kernel also
// fires it when the parent's *thread* that started us exits, not only the
// parent process: a Go parent should start corral from a goroutine locked
// to its OS thread for the child's whole life, or from its main thread.)
func init() {
	if len(os.Args) > 1 && (os.Args[1] == "run" || os.Args[1] == "exec") {
		if err := setParentDeathSignal(parentDeathSignal); err != nil {
			fmt.Fprintf(os.Stderr, "corral: %v\n", err)
			os.Exit(exitVMMFailure)
		}
	}
}

// setParentDeathSignal has the kernel send sig to this process when its
// parent dies. A parent that died before the prctl (we were reparented in
// between) counts as dead: the process exits. One that died before this
// process read its parent's pid cannot be seen.
func setParentDeathSignal(sig syscall.Signal) error {
	ppid := os.Getppid()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(sig), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	if os.Getppid() != ppid {
		fmt.Fprintln(os.Stderr, "corral: the parent process died while corral started")
		os.Exit(128 + int(sig))
	}
	return nil
}
