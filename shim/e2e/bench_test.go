package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/shim/internal/ctrdtest"
)

// bench/containerd.sh sets these; without -bench-rounds the benchmark
// test skips.
var (
	flagBenchRounds = flag.Int("bench-rounds", 0, "TestBenchCtrRun: rounds of ctr run --rm vs corral exec (0: skip the benchmark)")
	flagCorral      = flag.String("corral", "", "TestBenchCtrRun: static corral binary for corral exec")
)

// TestBenchCtrRun measures issue 14's overhead: `ctr run --rm IMAGE id
// true` through the shim against `corral exec -- true` (cold: --cold, as
// the shim boots; and warm, from a snapshot) on the same kernel, process
// start to exit, rounds alternating their order. It prints "ctrbench:"
// lines that bench/containerd.sh collects.
func TestBenchCtrRun(t *testing.T) {
	if *flagBenchRounds <= 0 {
		t.Skip("a benchmark: bench/containerd.sh runs it (-bench-rounds N -corral PATH)")
	}
	if *flagCorral == "" {
		t.Fatal("-corral: no corral binary")
	}
	e := setup(t, ns)
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // corral exec's warm snapshots
	// --workdir /: the test's directory may be under /tmp, the guest's own.
	execArgs := []string{"exec", "--workdir", "/"}
	if c := os.Getenv("CORRAL_TCGKVM_CMDLINE"); c != "" {
		execArgs = append(execArgs, "--cmdline", c)
	}
	corralExec := func(extra ...string) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), bootTimeout)
		defer cancel()
		args := append(append(slices.Clone(execArgs), extra...), "--", "true")
		cmd := exec.CommandContext(ctx, *flagCorral, args...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("corral %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return time.Since(start), nil
	}
	// The shim's Cold option, through ctr's runtime options file: the
	// shim's cold boot against corral exec --cold.
	coldOpts := filepath.Join(t.TempDir(), "cold.toml")
	if err := os.WriteFile(coldOpts, []byte("Cold = true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n := 0
	var lastStart, lastEnd, lastColdStart, lastColdEnd time.Time
	run := func(cold bool) (time.Duration, error) {
		n++
		args := []string{"run", "--rm", "--runtime", ctrdtest.RuntimeType}
		if cold {
			args = append(args, "--runtime-config-path", coldOpts)
			lastColdStart = time.Now()
		} else {
			lastStart = time.Now()
		}
		r := e.ctr(t, bootTimeout, append(args, ctrdtest.ImageRef, fmt.Sprintf("b%d", n), "true")...)
		if cold {
			lastColdEnd = time.Now()
		} else {
			lastEnd = time.Now()
		}
		if r.code != 0 {
			return 0, fmt.Errorf("ctr %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
		return r.took, nil
	}
	ctrRun := func() (time.Duration, error) { return run(false) }
	// Warm-ups, not counted: the first of each pages its binaries in, and
	// the first warm exec boots and builds the snapshot.
	for _, f := range []func() (time.Duration, error){ctrRun, func() (time.Duration, error) { return corralExec("--cold") }, func() (time.Duration, error) { return corralExec() }} {
		if d, err := f(); err != nil {
			t.Fatalf("warm-up: %v", err)
		} else {
			fmt.Printf("ctrbench: warm-up %d ms\n", d.Milliseconds())
		}
	}
	rows := map[string][]float64{}
	kinds := []string{"ctr run --rm", "corral exec --cold", "corral exec (warm)", "ctr run --rm (shim Cold)"}
	steps := map[string]func() (time.Duration, error){
		kinds[0]: ctrRun,
		kinds[1]: func() (time.Duration, error) { return corralExec("--cold") },
		kinds[2]: func() (time.Duration, error) { return corralExec() },
		kinds[3]: func() (time.Duration, error) { return run(true) },
	}
	for i := 0; i < *flagBenchRounds; i++ {
		order := slices.Clone(kinds)
		if i%2 == 1 {
			slices.Reverse(order)
		}
		var line []string
		for _, k := range order {
			d, err := steps[k]()
			if err != nil {
				t.Errorf("round %d: %v", i, err)
				continue
			}
			rows[k] = append(rows[k], float64(d.Milliseconds()))
			line = append(line, fmt.Sprintf("%s %d ms", k, d.Milliseconds()))
		}
		fmt.Printf("ctrbench: round %d: %s\n", i, strings.Join(line, ", "))
	}
	// Where the last ctr run's time went: containerd's events for it.
	for _, ev := range events(t, e.d.LogPath, ns, lastStart, lastEnd) {
		fmt.Printf("ctrbench: last ctr run: +%d ms %s\n", ev.at.Milliseconds(), ev.topic)
	}
	// And the shim's own step timings (its log at containerd's debug
	// level: shim/task's and agentvm's "step" lines).
	for _, l := range shimSteps(t, e.d.LogPath, lastStart, lastEnd) {
		fmt.Printf("ctrbench: last ctr run: shim: %s\n", l)
	}
	for _, l := range shimSteps(t, e.d.LogPath, lastColdStart, lastColdEnd) {
		fmt.Printf("ctrbench: last cold ctr run: shim: %s\n", l)
	}
	// corral exec's own steps, warm and cold, for the same parts (not
	// counted: --log debug writes to stderr).
	for _, extra := range [][]string{nil, {"--cold"}} {
		args := append(append(slices.Clone(execArgs), extra...), "--log", "debug", "--", "true")
		out, err := exec.Command(*flagCorral, args...).CombinedOutput()
		if err != nil {
			t.Errorf("corral %s: %v: %s", strings.Join(args, " "), err, out)
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			msg := logField(l, "msg")
			if strings.HasPrefix(msg, "exec:") || strings.HasPrefix(msg, "warm:") || strings.HasPrefix(msg, "agentvm:") {
				fmt.Printf("ctrbench: corral exec %s--log debug: %s\n", strings.Join(extra, " ")+" ", l[strings.Index(l, "msg="):])
			}
		}
	}
	med := map[string]float64{}
	for _, k := range kinds {
		med[k] = median(rows[k])
		if len(rows[k]) > 0 {
			fmt.Printf("ctrbench: median %s: %.0f ms (n=%d, min %.0f, max %.0f)\n", k, med[k], len(rows[k]), slices.Min(rows[k]), slices.Max(rows[k]))
		}
	}
	if w := med[kinds[2]]; w > 0 {
		r := med[kinds[0]] / w
		fmt.Printf("ctrbench: ratio ctr run --rm / corral exec (warm): %.2fx (overhead %+.0f%%; issue 14's target: at most +10%%)\n", r, (r-1)*100)
	}
	if c := med[kinds[1]]; c > 0 {
		r := med[kinds[3]] / c
		fmt.Printf("ctrbench: ratio ctr run --rm (shim Cold) / corral exec --cold: %.2fx (overhead %+.0f%%)\n", r, (r-1)*100)
	}
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

type event struct {
	at    time.Duration // after the ctr run started
	topic string
}

// events returns the events containerd's debug log says it published in
// namespace ns from since to until, with their times after since.
func events(t *testing.T, logPath, ns string, since, until time.Time) []event {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Errorf("containerd log: %v", err)
		return nil
	}
	var out []event
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.Contains(l, `msg="event published"`) || !strings.Contains(l, " ns="+ns+" ") {
			continue
		}
		ts, topic := logField(l, "time"), logField(l, "topic")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(since) || at.After(until) {
			continue
		}
		out = append(out, event{at.Sub(since), topic})
	}
	return out
}

// logField returns key's value in a logrus text line (quoted or bare).
func logField(line, key string) string {
	i := strings.Index(line, key+"=")
	if i < 0 || (i > 0 && line[i-1] != ' ') {
		return ""
	}
	v := line[i+len(key)+1:]
	if strings.HasPrefix(v, `"`) {
		if j := strings.Index(v[1:], `"`); j >= 0 {
			return v[1 : j+1]
		}
		return ""
	}
	if j := strings.IndexByte(v, ' '); j >= 0 {
		return v[:j]
	}
	return v
}

// shimSteps returns the shim's timing lines (slog text lines whose
// message starts "shim:", "warm:" or "agentvm:") in containerd's log
// from since on (before until, unless zero), each prefixed with its time
// after since.
func shimSteps(t *testing.T, logPath string, since, until time.Time) []string {
	t.Helper()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Errorf("containerd log: %v", err)
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		msg := logField(l, "msg")
		if !strings.HasPrefix(msg, "shim:") && !strings.HasPrefix(msg, "warm:") && !strings.HasPrefix(msg, "agentvm:") {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, logField(l, "time"))
		if err != nil || at.Before(since) || !until.IsZero() && at.After(until) {
			continue
		}
		if i := strings.Index(l, "msg="); i >= 0 {
			l = l[i:]
		}
		out = append(out, fmt.Sprintf("+%d ms %s", at.Sub(since).Milliseconds(), l))
	}
	return out
}
