package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/corral-vmm/corral/inventory"
)

// logsCommand implements `corral logs [-f] ID|NAME`: the VM's console log
// (the rotated part first); with -f it follows the log until the VM is
// no longer running.
func logsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("logs", stderr)
	follow := fs.Bool("f", false, "follow the log while the VM runs")
	if st, done := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "corral logs: want one ID, ID prefix or name")
		return exitUsage
	}
	v, err := findVM(fs.Arg(0), stderr, "logs")
	if err != nil {
		fmt.Fprintf(stderr, "corral logs: %v\n", err)
		return exitFailure
	}
	p := filepath.Join(v.Dir, inventory.ConsoleLogFile)
	if b, err := os.ReadFile(p + ".1"); err == nil {
		stdout.Write(b)
	}
	f, err := os.Open(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "corral logs: %v\n", err)
		return exitFailure
	}
	if f != nil {
		defer func() { f.Close() }()
	}
	for {
		// Tested before copying, so what a VMM writes just before it
		// ends is copied before we stop.
		running := *follow && stillRunning(v)
		if f != nil {
			if _, err := io.Copy(stdout, f); err != nil {
				fmt.Fprintf(stderr, "corral logs: %v\n", err)
				return exitFailure
			}
		}
		if !*follow {
			return exitOK
		}
		// Rotated: the rest of the old file was just copied; go on
		// with the new one.
		if nf, err := os.Open(p); err == nil {
			if f == nil || !sameFile(f, nf) {
				if f != nil {
					f.Close()
				}
				f = nf
				continue
			}
			nf.Close()
		}
		if !running {
			return exitOK // everything it wrote has been copied
		}
		select {
		case <-ctx.Done():
			return exitOK
		case <-time.After(followPoll):
		}
	}
}

func sameFile(a, b *os.File) bool {
	sa, err1 := a.Stat()
	sb, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// stillRunning reports whether v's VMM still holds its lock.
func stillRunning(v *inventory.VM) bool {
	vms, err := inventory.List(filepath.Dir(filepath.Dir(v.Dir)))
	if err != nil {
		return false
	}
	for _, w := range vms {
		if w.ID == v.ID {
			return w.State == inventory.Running
		}
	}
	return false
}
