package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/inventory"
)

// followPoll is how often -f looks for more.
const followPoll = 200 * time.Millisecond

// eventsCommand implements `corral events [-f] [--since D] [--json]`.
func eventsCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("events", stderr)
	follow := fs.Bool("f", false, "follow the trail")
	since := fs.Duration("since", 0, "only events of the last D")
	asJSON := fs.Bool("json", false, "print the records as they are")
	if st, done := parseFlags(fs, args); done {
		return st
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "corral events: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *since < 0 {
		fmt.Fprintf(stderr, "corral events: --since %v: must not be negative\n", *since)
		return exitUsage
	}
	path := audit.DefaultPath(inventory.StateDir())
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) && !*follow {
		return exitOK // nothing happened yet
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "corral events: %v\n", err)
		return exitFailure
	}
	boot, _ := inventory.BootID()
	keep := sinceFilter(*since, inventory.SystemClock{}, boot)
	print := func(line []byte) {
		e, err := audit.Parse(line)
		if err != nil {
			fmt.Fprintf(stderr, "corral events: warning: %s: %v\n", path, err)
			return
		}
		if !keep(e) {
			return
		}
		if *asJSON {
			fmt.Fprintf(stdout, "%s\n", bytes.TrimSpace(line))
		} else {
			fmt.Fprintln(stdout, formatEvent(e))
		}
	}
	if err := tail(ctx, path, f, *follow, print); err != nil {
		fmt.Fprintf(stderr, "corral events: %v\n", err)
		return exitFailure
	}
	return exitOK
}

// sinceFilter keeps the events of the last d by the boot-time clock, never
// the calendar: an event of this boot is kept if it is at most d old; one
// of an earlier boot is older than the boot itself, so it is kept only if
// d reaches back before the boot.
func sinceFilter(d time.Duration, clk inventory.Clock, boot string) func(audit.Event) bool {
	if d == 0 {
		return func(audit.Event) bool { return true }
	}
	now := clk.Boottime()
	return func(e audit.Event) bool {
		if e.BootID == boot {
			return now-time.Duration(e.Boottime) <= d
		}
		return d > now
	}
}

// formatEvent is one event for people: time, event, VM, name, fields.
func formatEvent(e audit.Event) string {
	var fields []string
	for k, v := range e.Fields {
		var s string
		if json.Unmarshal(v, &s) != nil {
			s = string(v)
		}
		fields = append(fields, k+"="+s)
	}
	slices.Sort(fields)
	id := e.VMID[:min(12, len(e.VMID))]
	return strings.TrimRight(fmt.Sprintf("%s  %-13s %s %s %s %s", e.Time.Format(time.RFC3339), e.Event, id, dash(e.Name),
		formatLabels(e.Labels), strings.Join(fields, " ")), " ")
}

// tail calls line for each whole line of the file at path (f, which may be
// nil until it exists); with follow it then waits for more, following the
// file when it is replaced (rotated) or truncated, until ctx is done.
func tail(ctx context.Context, path string, f *os.File, follow bool, line func([]byte)) error {
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var partial []byte
	for {
		if f != nil {
			r := bufio.NewReader(f)
			for {
				b, err := r.ReadBytes('\n')
				if len(b) > 0 && b[len(b)-1] == '\n' {
					line(append(partial, b...))
					partial = partial[:0]
				} else {
					partial = append(partial, b...)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
			}
		}
		if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
		f = reopenIfReplaced(path, f, &partial)
	}
}

// reopenIfReplaced returns a descriptor of the file now at path when f is
// nil, was replaced (another inode) or was truncated; else f.
func reopenIfReplaced(path string, f *os.File, partial *[]byte) *os.File {
	st, err := os.Stat(path)
	if err != nil {
		return f
	}
	if f != nil {
		fst, err := f.Stat()
		pos, _ := f.Seek(0, io.SeekCurrent)
		same := err == nil && os.SameFile(st, fst)
		if same && st.Size() >= pos {
			return f
		}
		if same { // truncated: start over
			f.Seek(0, io.SeekStart)
			*partial = (*partial)[:0]
			return f
		}
		f.Close()
	}
	nf, err := os.Open(path)
	if err != nil {
		return nil
	}
	*partial = (*partial)[:0]
	return nf
}
