package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/corral-vmm/corral/control"
)

// killCommand implements `corral kill ID|NAME`: the VM is stopped hard at
// once, without asking the guest.
func killCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corral kill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	q, st, done := parseOneVMArg(fs, args, "kill")
	if done {
		return st
	}
	return endVM(ctx, q, "kill", stdout, stderr, func(ctx context.Context, c *control.Client) (control.Ended, error) {
		return c.Kill(ctx)
	}, 0)
}
