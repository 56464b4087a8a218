package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/corral-vmm/corral/inventory"
)

// inspectCommand implements `corral inspect ID|NAME`: the VM's record,
// state, age and directory as JSON.
func inspectCommand(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("inspect", stderr)
	if st, done := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "corral inspect: want one ID, ID prefix or name")
		return exitUsage
	}
	v, err := findVM(fs.Arg(0), stderr, "inspect")
	if err != nil {
		fmt.Fprintf(stderr, "corral inspect: %v\n", err)
		return exitFailure
	}
	if v.State == inventory.Corrupt {
		fmt.Fprintf(stderr, "corral inspect: %v\n", v.Err)
		return exitFailure
	}
	boot, _ := inventory.BootID()
	b, _ := json.MarshalIndent(describe(v, inventory.SystemClock{}, boot), "", "  ")
	fmt.Fprintf(stdout, "%s\n", b)
	return exitOK
}
