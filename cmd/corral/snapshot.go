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
)

// pauseCommand implements `corral pause ID|NAME` and `corral resume
// ID|NAME`.
func pauseCommand(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corral "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	q, st, done := parseOneVMArg(fs, args, cmd)
	if done {
		return st
	}
	return controlVM(ctx, q, cmd, stdout, stderr, func(ctx context.Context, c *control.Client) (control.State, error) {
		if cmd == "pause" {
			return c.Pause(ctx)
		}
		return c.Resume(ctx)
	})
}

// snapshotCommand implements `corral snapshot [--resume] ID|NAME DIR`.
func snapshotCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corral snapshot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	resume := fs.Bool("resume", false, "let the VM run on once the snapshot is written")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 2 {
		fmt.Fprintf(stderr, "corral snapshot: want ID|NAME and DIR, got %d arguments\n", len(pos))
		return exitUsage
	}
	dir, err := filepath.Abs(pos[1])
	if err != nil {
		fmt.Fprintf(stderr, "corral snapshot: %v\n", err)
		return exitUsage
	}
	return controlVM(ctx, pos[0], "snapshot", stdout, stderr, func(ctx context.Context, c *control.Client) (control.State, error) {
		return c.Snapshot(ctx, dir, *resume)
	})
}

// controlVM finds the running VM q names and asks its control socket to do
// something that leaves it running or paused.
func controlVM(ctx context.Context, q, cmd string, stdout, stderr io.Writer,
	do func(context.Context, *control.Client) (control.State, error)) int {
	v, label, ok := findRunningVM(q, cmd, stderr)
	if !ok {
		return exitNotStopped
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	st, err := do(ctx, control.NewClient(filepath.Join(v.Dir, control.SocketName)))
	if err != nil {
		fmt.Fprintf(stderr, "corral %s: VM %s: %v\n", cmd, label, err)
		return exitNotStopped
	}
	if st.Dir != "" {
		fmt.Fprintf(stdout, "%s %s: snapshot in %s\n", label, st.State, st.Dir)
	} else {
		fmt.Fprintf(stdout, "%s %s\n", label, st.State)
	}
	return exitOK
}
