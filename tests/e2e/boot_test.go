package e2e

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/syncbuf"
)

// consoleTail is how much of a failed boot's console goes into the test log.
const consoleTail = 6000

// markConsole is a machine's console: it keeps the output in a
// console.Buffer and notes when each watched string first appears on a line.
type markConsole struct {
	buf   *console.Buffer
	start time.Time

	mu    sync.Mutex
	line  []byte
	watch []string
	marks map[string]time.Duration
}

func newMarkConsole(watch []string) *markConsole {
	return &markConsole{buf: console.NewBuffer(0), start: time.Now(), watch: watch, marks: map[string]time.Duration{}}
}

// setStart sets the time that marks count from.
func (c *markConsole) setStart(t time.Time) {
	c.mu.Lock()
	c.start = t
	c.mu.Unlock()
}

// Write keeps p and records the time of watched strings on complete lines.
func (c *markConsole) Write(p []byte) (int, error) {
	c.mu.Lock()
	for _, b := range p {
		if b != '\n' {
			if len(c.line) < 4096 {
				c.line = append(c.line, b)
			}
			continue
		}
		for _, w := range c.watch {
			if _, seen := c.marks[w]; !seen && bytes.Contains(c.line, []byte(w)) {
				c.marks[w] = time.Since(c.start)
			}
		}
		c.line = c.line[:0]
	}
	c.mu.Unlock()
	return c.buf.Write(p)
}

// mark returns when w first appeared on a console line.
func (c *markConsole) mark(w string) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.marks[w]
	return d, ok
}

// vmRun is one Linux boot under Corral.
type vmRun struct {
	m       *corral.Machine
	console *markConsole
	logs    *syncbuf.Buffer
	started time.Time
	watch   []string
	exit    corral.Exit
	elapsed time.Duration
}

// startLinux creates and starts a machine from cfg; see newLinux.
func startLinux(t *testing.T, cfg corral.Config, watch ...string) *vmRun {
	t.Helper()
	r := newLinux(t, cfg, watch...)
	r.start(t)
	return r
}

// newLinux creates a machine from cfg (its Console and Logger are set
// here) without starting it. watch lists console strings whose first
// appearance is timed for the log. If the test fails, the tail of the
// console and Corral's log are added to the failure output.
func newLinux(t *testing.T, cfg corral.Config, watch ...string) *vmRun {
	t.Helper()
	r := &vmRun{logs: &syncbuf.Buffer{}, watch: watch}
	r.console = newMarkConsole(watch)
	cfg.Console = r.console
	cfg.Logger = slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	t.Logf("booting %s (%d CPUs) initrd=%q disks=%d nets=%d cmdline %q",
		cfg.Kernel, max(cfg.CPUs, 1), cfg.Initrd, len(cfg.Disks), len(cfg.Nets), cfg.Cmdline)
	m, err := corral.New(cfg)
	if err != nil {
		t.Fatalf("corral.New: %v", err)
	}
	r.m = m
	t.Cleanup(func() {
		m.Close()
		switch {
		case os.Getenv(ConsoleEnv) == "1":
			t.Logf("console of the boot:\n%s", r.console.buf.String())
			t.Logf("Corral's log:\n%s", r.logs.String())
		case t.Failed():
			t.Logf("console of the boot (last %d bytes):\n%s", consoleTail, tail(r.console.buf.String(), consoleTail))
			t.Logf("Corral's log:\n%s", tail(r.logs.String(), 4000))
		}
	})
	return r
}

// start runs the machine, bounded by bootTimeout; console times count from here.
func (r *vmRun) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
	t.Cleanup(cancel)
	r.started = time.Now()
	r.console.setStart(r.started)
	if err := r.m.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
}

// wait waits for the machine to end (bootTimeout stops it) and returns how.
func (r *vmRun) wait(t *testing.T) corral.Exit {
	t.Helper()
	select {
	case <-r.m.Done():
	case <-time.After(bootTimeout + time.Minute):
		t.Fatalf("machine did not end %v after its context expired", time.Minute)
	}
	r.exit, _ = r.m.Wait() // an ExitError carries its Err; callers check the Reason
	r.elapsed = time.Since(r.started)
	r.logTimes(t)
	return r.exit
}

// out returns the console output so far.
func (r *vmRun) out() string { return r.console.buf.String() }

// logTimes logs when each watched string appeared.
func (r *vmRun) logTimes(t *testing.T) {
	t.Helper()
	var b strings.Builder
	for _, w := range r.watch {
		if d, ok := r.console.mark(w); ok {
			fmt.Fprintf(&b, "  %-44q at %6.1fs\n", w, d.Seconds())
		} else {
			fmt.Fprintf(&b, "  %-44q never\n", w)
		}
	}
	t.Logf("machine ended after %.1fs: %v\n%s", r.elapsed.Seconds(), r.exit, b.String())
}

// wantExit fails the test at once unless the machine ended as want (and,
// for ExitDebug, with code). Known guest-side causes are named.
func (r *vmRun) wantExit(t *testing.T, want corral.ExitReason, code uint8) {
	t.Helper()
	out := r.out()
	var why []string
	for _, s := range []string{"emulation failure", "Kernel panic", "BUG:", "Oops", "KVM internal error"} {
		if strings.Contains(out, s) {
			why = append(why, fmt.Sprintf("console shows %q", s))
		}
	}
	if r.exit.Reason != want || (want == corral.ExitDebug && r.exit.Code != code) {
		wantS := want.String()
		if want == corral.ExitDebug {
			wantS = fmt.Sprintf("%s code %d", want, code)
		}
		t.Fatalf("machine ended with %v, want %s %v", r.exit, wantS, why)
	}
	if len(why) > 0 {
		t.Errorf("machine ended as expected, but %v", why)
	}
}

// want fails the test for every string the console lacks.
func (r *vmRun) want(t *testing.T, ss ...string) {
	t.Helper()
	out := r.out()
	for _, s := range ss {
		if !strings.Contains(out, s) {
			t.Errorf("console lacks %q", s)
		}
	}
}

// wantRe fails the test unless the console matches re; it returns the
// submatches of the first match.
func (r *vmRun) wantRe(t *testing.T, re string) []string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(r.out())
	if m == nil {
		t.Errorf("console does not match %q", re)
	}
	return m
}

// dontWant fails the test for every string the console shows.
func (r *vmRun) dontWant(t *testing.T, ss ...string) {
	t.Helper()
	out := r.out()
	for _, s := range ss {
		if strings.Contains(out, s) {
			t.Errorf("console shows %q", s)
		}
	}
}
