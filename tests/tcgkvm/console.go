package main

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// statusNoKVM is /init's final status when kvm-amd gave no /dev/kvm.
const statusNoKVM = 3

// binaryResult is what the console said about one test binary.
type binaryResult struct {
	Name                       string
	Exit                       int     // -1 until the binary's result line
	Seconds                    float64 // by the VM's clock
	Pass, Fail, Skip           int     // top-level tests only
	Passed, FailedTests, Skips []string
	Ended                      bool // the binary printed its final PASS or FAIL line
}

// consoleLog follows the VM's serial console line by line.
type consoleLog struct {
	Results []binaryResult
	Done    bool
	Status  int      // /init's final status, valid when Done
	Init    string   // the "tcgkvm: init at ..." line
	Ready   string   // the "tcgkvm: /dev/kvm ready at ..." line
	NoKVM   []string // lines explaining a missing /dev/kvm
	cur     *binaryResult
}

var (
	testLine   = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+)`)
	resultLine = regexp.MustCompile(`^tcgkvm: result (\S+) exit=(\d+) start=([0-9.]+)s end=([0-9.]+)s$`)
	doneLine   = regexp.MustCompile(`^tcgkvm: done status=(\d+)$`)
)

// Line takes one console line (without its line ending).
func (c *consoleLog) Line(line string) {
	line = strings.TrimRight(line, "\r")
	switch {
	case strings.HasPrefix(line, "tcgkvm: init at "):
		c.Init = line
	case strings.HasPrefix(line, "tcgkvm: /dev/kvm ready"):
		c.Ready = line
	case strings.HasPrefix(line, "tcgkvm: insmod "), strings.HasPrefix(line, "tcgkvm: no /dev/kvm"):
		c.NoKVM = append(c.NoKVM, line)
	case strings.HasPrefix(line, "tcgkvm: run "):
		c.Results = append(c.Results, binaryResult{Name: strings.Fields(line)[2], Exit: -1})
		c.cur = &c.Results[len(c.Results)-1]
	}
	if (line == "PASS" || line == "FAIL") && c.cur != nil {
		c.cur.Ended = true
	}
	if m := testLine.FindStringSubmatch(line); m != nil && c.cur != nil {
		switch m[1] {
		case "PASS":
			c.cur.Pass++
			c.cur.Passed = append(c.cur.Passed, m[2])
		case "FAIL":
			c.cur.Fail++
			c.cur.FailedTests = append(c.cur.FailedTests, m[2])
		case "SKIP":
			c.cur.Skip++
			c.cur.Skips = append(c.cur.Skips, m[2])
		}
	}
	if m := resultLine.FindStringSubmatch(line); m != nil && c.cur != nil && c.cur.Name == m[1] {
		c.cur.Exit, _ = strconv.Atoi(m[2])
		start, _ := strconv.ParseFloat(m[3], 64)
		end, _ := strconv.ParseFloat(m[4], 64)
		c.cur.Seconds = end - start
		c.cur = nil
	}
	if m := doneLine.FindStringSubmatch(line); m != nil {
		c.Done = true
		c.Status, _ = strconv.Atoi(m[1])
	}
}

// merge takes the results of a boot that ran failed tests again (r). A
// binary whose failed tests all ran and passed there passes, and those
// tests are returned as flaky ("binary: Test"); any other outcome keeps
// its failure.
func (c *consoleLog) merge(r *consoleLog) (flaky []string) {
	for _, n := range r.Results {
		i := slices.IndexFunc(c.Results, func(o binaryResult) bool { return o.Name == n.Name })
		if i < 0 {
			continue
		}
		o := &c.Results[i]
		o.Seconds += n.Seconds
		if n.Exit != 0 || n.Fail > 0 || n.Pass < len(o.FailedTests) {
			continue
		}
		for _, t := range o.FailedTests {
			flaky = append(flaky, o.Name+": "+t)
		}
		o.Exit, o.Pass, o.Fail, o.FailedTests = 0, o.Pass+n.Pass, 0, nil
	}
	c.Status = 0
	for _, x := range c.Results {
		if x.Exit != 0 {
			c.Status = 1
		}
	}
	return flaky
}

// Err says why the run failed, or nil if every binary ran and passed.
func (c *consoleLog) Err() error {
	if !c.Done {
		if c.cur != nil {
			return fmt.Errorf("tcgkvm: VM ended during %s without the final marker (crash or timeout)", c.cur.Name)
		}
		return fmt.Errorf("tcgkvm: VM ended without the final marker (crash or timeout)")
	}
	if c.Status == statusNoKVM {
		return fmt.Errorf("tcgkvm: no /dev/kvm in the VM: %s", strings.Join(c.NoKVM, "; "))
	}
	var failed []string
	for _, r := range c.Results {
		if r.Exit != 0 {
			failed = append(failed, fmt.Sprintf("%s (exit %d: %s)", r.Name, r.Exit, strings.Join(r.FailedTests, " ")))
		}
	}
	if len(failed) > 0 || c.Status != 0 {
		return fmt.Errorf("tcgkvm: tests failed in the VM: %s", strings.Join(failed, ", "))
	}
	return nil
}

// Summary is one line per binary.
func (c *consoleLog) Summary() string {
	var b strings.Builder
	for _, r := range c.Results {
		if r.Exit < 0 {
			fmt.Fprintf(&b, "tcgkvm: %s: did not finish, %d passed, %d failed, %d skipped so far\n", r.Name, r.Pass, r.Fail, r.Skip)
			continue
		}
		fmt.Fprintf(&b, "tcgkvm: %s: exit %d, %d passed, %d failed, %d skipped, %.1fs in the VM\n",
			r.Name, r.Exit, r.Pass, r.Fail, r.Skip, r.Seconds)
		if len(r.FailedTests) > 0 {
			fmt.Fprintf(&b, "tcgkvm:   failed: %s\n", strings.Join(r.FailedTests, " "))
		}
		if len(r.Skips) > 0 {
			fmt.Fprintf(&b, "tcgkvm:   skipped: %s\n", strings.Join(r.Skips, " "))
		}
	}
	return b.String()
}
