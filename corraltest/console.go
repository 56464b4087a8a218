package corraltest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
)

const (
	// maxLine is the longest console line logged whole; a longer run of
	// bytes without a newline is logged in pieces of this size.
	maxLine = 4 << 10
	// keepConsole is how much console output Expect can search: the most
	// recent bytes. A test that lets more pile up between two Expect calls
	// loses the oldest.
	keepConsole = 1 << 20
	// tailLines is how many console lines an error quotes.
	tailLines = 20
)

// console is the machine's Config.Console: it logs each line to the test
// (t.Log, "console: " prefixed) and keeps the output for Expect.
type console struct {
	tb   testing.TB
	user io.Writer // the caller's own Config.Console, or nil

	mu      sync.Mutex
	partial []byte // the line being written, not yet logged
	closed  bool   // the test is ending: t.Log may no longer be called
	out     []byte // the last keepConsole bytes of output
	off     int64  // stream offset of out[0]
	cursor  int64  // stream offset where the next Expect starts looking
	changed chan struct{}
}

func newConsole(tb testing.TB, user io.Writer) *console {
	return &console{tb: tb, user: user, changed: make(chan struct{})}
}

// Write logs the complete lines in p and keeps p for Expect. It never fails:
// the machine's console must not stall on the test.
func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out = append(c.out, p...)
	if over := len(c.out) - keepConsole; over > 0 {
		c.out = append(c.out[:0], c.out[over:]...)
		c.off += int64(over)
		c.cursor = max(c.cursor, c.off)
	}
	close(c.changed)
	c.changed = make(chan struct{})
	if !c.closed {
		c.logLines(p)
	}
	c.mu.Unlock()
	if c.user != nil {
		c.user.Write(p)
	}
	return len(p), nil
}

// logLines logs each complete line of partial+p; c.mu is held.
func (c *console) logLines(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			c.partial = append(c.partial, p...)
			for len(c.partial) >= maxLine {
				c.logLine(c.partial[:maxLine])
				c.partial = append(c.partial[:0], c.partial[maxLine:]...)
			}
			return
		}
		if len(c.partial) > 0 {
			c.partial = append(c.partial, p[:i]...)
			c.logLine(c.partial)
			c.partial = c.partial[:0]
		} else {
			c.logLine(p[:i])
		}
		p = p[i+1:]
	}
}

func (c *console) logLine(line []byte) {
	c.tb.Log("console: " + string(bytes.TrimRight(line, "\r")))
}

// logf logs a line of the test's own (machine logs) unless the test is
// ending.
func (c *console) logf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.tb.Logf(format, args...)
	}
}

// close logs a last incomplete line; from then on output is kept but not
// logged (the test is ending, when t.Log panics).
func (c *console) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if len(c.partial) > 0 {
		c.logLine(c.partial)
		c.partial = nil
	}
	c.closed = true
}

// expect waits for re to match the output after the previous match, and
// returns the match and its submatches. It gives up when ctx ends or ended
// is closed (the machine ended) with no match, with an error quoting the
// last lines.
func (c *console) expect(ctx context.Context, re *regexp.Regexp, ended <-chan struct{}) ([]string, error) {
	for {
		m, changed := c.match(re, false)
		if m != nil {
			return m, nil
		}
		select {
		case <-changed:
		case <-ended:
			// The machine has flushed its console by the time it ends:
			// one more look, then give up.
			if m, _ := c.match(re, true); m != nil {
				return m, nil
			}
			return nil, fmt.Errorf("corraltest: the machine ended before the console matched %q; last lines:\n%s", re, c.tail(tailLines))
		case <-ctx.Done():
			return nil, fmt.Errorf("corraltest: console did not match %q: %w; last lines:\n%s", re, context.Cause(ctx), c.tail(tailLines))
		}
	}
}

// match looks for re in the complete lines after the cursor (all the
// output, with all) and moves the cursor past a match. Without one it
// returns the channel closed by the next Write.
func (c *console) match(re *regexp.Regexp, all bool) ([]string, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rest := c.out[c.cursor-c.off:]
	if !all {
		// A line still being written could match too early: "(.*)"
		// would take half of it.
		rest = rest[:bytes.LastIndexByte(rest, '\n')+1]
	}
	m := re.FindSubmatchIndex(rest)
	if m == nil {
		return nil, c.changed
	}
	subs := make([]string, len(m)/2)
	for i := range subs {
		if m[2*i] >= 0 {
			subs[i] = string(rest[m[2*i]:m[2*i+1]])
		}
	}
	// An empty match moves on by a byte too, so a loop of Expect ends.
	c.cursor += int64(min(max(m[1], 1), len(rest)))
	return subs, nil
}

// tail returns the last n lines of output, indented, for error messages.
func (c *console) tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return indent(lastLines(c.out, n))
}

// lines returns the last n lines of output.
func (c *console) lines(n int) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return lastLines(c.out, n)
}

// lastLines splits out into lines (without "\r\n") and returns the last n;
// an incomplete last line counts.
func lastLines(out []byte, n int) []string {
	s := strings.TrimSuffix(string(out), "\n")
	if s == "" || n <= 0 {
		return nil
	}
	all := strings.Split(s, "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	for i, l := range all {
		all[i] = strings.TrimRight(l, "\r")
	}
	return all
}

func indent(lines []string) string {
	if len(lines) == 0 {
		return "\t(no console output)"
	}
	return "\t" + strings.Join(lines, "\n\t")
}
