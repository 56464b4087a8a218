package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/corral-vmm/corral/inventory"
)

// gcCommand implements `corral gc`: it removes the directories of ended,
// crashed and corrupt VMs, auditing each (vm.crashed for a crash not yet
// reported, then vm.collected) before it is removed. Without a writable
// audit trail it removes nothing.
func gcCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("gc", stderr)
	if st, done := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "corral gc: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	alog, err := openAudit()
	if err != nil {
		fmt.Fprintf(stderr, "corral gc: %v\n", err)
		return exitFailure
	}
	vms, err := listVMs(stderr, "gc")
	if err != nil {
		fmt.Fprintf(stderr, "corral gc: %v\n", err)
		return exitFailure
	}
	status := exitOK
	for i := range vms {
		v := &vms[i]
		err := alog.CollectVM(v)
		if errors.Is(err, inventory.ErrRunning) {
			continue // running, starting, or another gc has it
		}
		if err != nil {
			fmt.Fprintf(stderr, "corral gc: %v\n", err)
			status = exitFailure
			continue
		}
		fmt.Fprintf(stdout, "collected %s %s (%s)\n", v.ID, dash(v.Name()), v.State)
	}
	return status
}
