package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/inventory"
)

// exitNotStopped: corral stop or kill could not end the VM (not found,
// not running, not ours, its VMM gone).
const exitNotStopped = 1

// stopCommand implements `corral stop [--timeout D] ID|NAME`: the guest is
// asked to power off and stopped hard after the timeout.
func stopCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corral stop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	timeout := fs.Duration("timeout", control.DefaultStopTimeout, "how long the guest has to power off")
	q, st, done := parseOneVMArg(fs, args, "stop")
	if done {
		return st
	}
	if *timeout < 0 || *timeout > control.MaxStopTimeout {
		fmt.Fprintf(stderr, "corral stop: --timeout %s: must be between 0 and %s\n", *timeout, control.MaxStopTimeout)
		return exitUsage
	}
	return endVM(ctx, q, "stop", stdout, stderr, func(ctx context.Context, c *control.Client) (control.Ended, error) {
		return c.Stop(ctx, *timeout)
	}, *timeout)
}

// parseOneVMArg parses flags before and after the one ID|NAME argument
// (`corral stop NAME --timeout 1s` reads as well as the other order).
func parseOneVMArg(fs *flag.FlagSet, args []string, cmd string) (q string, status int, done bool) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", exitOK, true
			}
			return "", exitUsage, true
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintf(fs.Output(), "corral %s: want one ID, ID prefix or name, got %d arguments\n", cmd, len(pos))
		return "", exitUsage, true
	}
	return pos[0], 0, false
}

// findRunningVM resolves q to a running VM and a label for messages
// ("ID (NAME)"); ok is false, with the reason on stderr, when there is
// none.
func findRunningVM(q, cmd string, stderr io.Writer) (v *inventory.VM, label string, ok bool) {
	vms, err := inventory.List(inventory.SearchDirs()...)
	if err != nil {
		fmt.Fprintf(stderr, "corral %s: %v\n", cmd, err)
		return nil, "", false
	}
	if v, err = inventory.Resolve(vms, q); err != nil {
		fmt.Fprintf(stderr, "corral %s: %v\n", cmd, err)
		return nil, "", false
	}
	label = v.ID
	if n := v.Name(); n != "" {
		label += " (" + n + ")"
	}
	if v.State == inventory.Corrupt {
		// Its record cannot be read, so neither can whether it runs: say why.
		fmt.Fprintf(stderr, "corral %s: %v (corral gc removes it once its VMM has let go)\n", cmd, v.Err)
		return nil, "", false
	}
	if v.State != inventory.Running {
		fmt.Fprintf(stderr, "corral %s: VM %s is %s, not running: nothing to %s\n", cmd, label, v.State, cmd)
		return nil, "", false
	}
	return v, label, true
}

// endVM finds the VM q names and has its control socket end it with do.
func endVM(ctx context.Context, q, cmd string, stdout, stderr io.Writer,
	do func(context.Context, *control.Client) (control.Ended, error), timeout time.Duration) int {
	v, label, ok := findRunningVM(q, cmd, stderr)
	if !ok {
		return exitNotStopped
	}
	// The stop answers once the VM has ended: allow the timeout, then
	// the VMM's own release.
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	e, err := do(ctx, control.NewClient(filepath.Join(v.Dir, control.SocketName)))
	switch {
	case errors.Is(err, control.ErrForbidden):
		fmt.Fprintf(stderr, "corral %s: VM %s: %v\n", cmd, label, err)
		return exitNotStopped
	case errors.Is(err, control.ErrNoServer):
		fmt.Fprintf(stderr, "corral %s: VM %s: its VMM does not answer on its control socket (it may have just ended or crashed): %v\n", cmd, label, err)
		return exitNotStopped
	case err != nil:
		fmt.Fprintf(stderr, "corral %s: VM %s: %v\n", cmd, label, err)
		return exitNotStopped
	}
	how := "stopped hard"
	if e.Graceful {
		how = "ended by the guest"
	}
	fmt.Fprintf(stdout, "%s: %s, %s\n", label, how, e.Exit)
	return exitOK
}
