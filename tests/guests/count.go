package guests

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// CountReport is what the count guest printed (see doc.go): its settings,
// every count line, and whether it finished.
type CountReport struct {
	Step, Limit uint64
	Buf         uint64   // guest-physical address of its 1 MiB buffer
	Checksum    uint64   // of the buffer when filled
	Counts      []uint64 // every "count K mem ..." line's K, in order
	Bad         []uint64 // the counts whose memory check failed
	Done        bool     // "count: done N" was printed
}

// ParseCount reads count's lines from console output (other lines are
// skipped). A malformed count line is an error; so is output without the
// "count: step" header line.
func ParseCount(console string) (CountReport, error) {
	var r CountReport
	header := false
	for _, l := range ConsoleLines(console) {
		switch {
		case strings.HasPrefix(l, "count: step "):
			if _, err := fmt.Sscanf(l, "count: step %d limit %d buf 0x%x checksum 0x%x", &r.Step, &r.Limit, &r.Buf, &r.Checksum); err != nil {
				return r, fmt.Errorf("guests: count: header %q: %v", l, err)
			}
			header = true
		case strings.HasPrefix(l, "count: done "):
			n, err := strconv.ParseUint(strings.TrimPrefix(l, "count: done "), 10, 64)
			if err != nil || !header || n != r.Limit {
				return r, fmt.Errorf("guests: count: %q does not match limit %d", l, r.Limit)
			}
			r.Done = true
		case strings.HasPrefix(l, "count "):
			f := strings.Fields(l)
			if len(f) < 4 || f[2] != "mem" {
				return r, fmt.Errorf("guests: count: malformed line %q", l)
			}
			k, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return r, fmt.Errorf("guests: count: malformed line %q", l)
			}
			switch {
			case f[3] == "ok" && len(f) == 4:
			case f[3] == "BAD" && len(f) == 5:
				r.Bad = append(r.Bad, k)
			default:
				return r, fmt.Errorf("guests: count: malformed line %q", l)
			}
			r.Counts = append(r.Counts, k)
		}
	}
	if !header {
		return r, errors.New("guests: count: no \"count: step\" line")
	}
	return r, nil
}

// Check says whether the counts go up by Step with no gap, from any
// multiple of Step (a restored guest's console starts mid-way), ending at
// Limit once Done, with every memory check passed. It needs two counts at
// least.
func (r CountReport) Check() error {
	if len(r.Bad) > 0 {
		return fmt.Errorf("guests: count: memory check failed at %v", r.Bad)
	}
	if len(r.Counts) < 2 {
		return fmt.Errorf("guests: count: %d count lines, want 2 or more", len(r.Counts))
	}
	if r.Step == 0 || r.Counts[0]%r.Step != 0 {
		return fmt.Errorf("guests: count: first count %d is not a multiple of step %d", r.Counts[0], r.Step)
	}
	for i, k := range r.Counts[1:] {
		prev := r.Counts[i]
		last := r.Done && i == len(r.Counts)-2
		switch {
		case last && k == r.Limit && k > prev && k-prev <= r.Step:
		case k != prev+r.Step:
			return fmt.Errorf("guests: count: %d follows %d, want %d (step %d)", k, prev, prev+r.Step, r.Step)
		}
	}
	if r.Done && r.Counts[len(r.Counts)-1] != r.Limit {
		return fmt.Errorf("guests: count: done, but the last count is %d, not the limit %d", r.Counts[len(r.Counts)-1], r.Limit)
	}
	return nil
}

// CountScenario is one boot of the count guest to its limit, written once
// and run under QEMU (TestQEMUCount) and Corral (TestCountGuest in the root
// package).
type CountScenario struct {
	Name    string
	Cmdline string
	Exit    int      // the guest's exit code
	Bad     []uint64 // counts whose memory check must fail (corrupt=K)
}

// CountScenarios are short runs (under 20 million increments): to a limit
// in whole steps, to one mid-step, and with a bit of the buffer flipped
// from count 2000000 on, which every later check must catch.
func CountScenarios() []CountScenario {
	return []CountScenario{
		{Name: "whole-steps", Cmdline: "step=2000000 limit=10000000", Exit: ExitOK},
		{Name: "mid-step", Cmdline: "step=3000000 limit=10000000 seed=0x1234", Exit: ExitOK},
		{Name: "corrupt", Cmdline: "step=1000000 limit=4000000 corrupt=2000000", Exit: ExitCountMemBad,
			Bad: []uint64{2000000, 3000000, 4000000}},
	}
}

// Verify checks the console of a run of s to its end: every count from the
// first step to the limit, memory failing exactly where s says.
func (s CountScenario) Verify(console string) error {
	r, err := ParseCount(console)
	if err != nil {
		return err
	}
	if fmt.Sprint(r.Bad) != fmt.Sprint(s.Bad) && len(r.Bad)+len(s.Bad) > 0 {
		return fmt.Errorf("guests: count %s: memory check failed at %v, want %v", s.Name, r.Bad, s.Bad)
	}
	if !r.Done {
		return fmt.Errorf("guests: count %s: no \"count: done\" line", s.Name)
	}
	if len(r.Counts) == 0 || r.Counts[0] != r.Step {
		return fmt.Errorf("guests: count %s: counts %v do not start at step %d", s.Name, r.Counts, r.Step)
	}
	r.Bad = nil
	return r.Check()
}
