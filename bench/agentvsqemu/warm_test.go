package agentvsqemu

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/testenv"
)

// flagExecLog is corral exec's --log level in TestWarmExec; at debug its
// log (the step timings of agentvm.Steps) goes into the test log.
var flagExecLog = flag.String("execlog", "info", "TestWarmExec: corral exec's --log level; at debug each exec's log is in the test log")

// needWarmSetup is needSetup without QEMU and busybox: TestWarmExec runs
// only corral.
func needWarmSetup(t *testing.T) setup {
	t.Helper()
	var s setup
	s.corral = corralBinary(t)
	testenv.MustHaveKVM(t)
	s.hostKernel(t)
	s.agent = os.Getenv(agentvm.AgentEnv)
	return s
}

// TestWarmExec: issue 13's warm `corral exec -- true` against a cold one
// (--cold) in the same run, process start to exit, alternating; the
// first warm exec, which boots and builds the snapshot, is reported on its
// own. The target: warm at most 1/20 of cold.
func TestWarmExec(t *testing.T) {
	s := needWarmSetup(t)
	t.Setenv("XDG_CACHE_HOME", t.TempDir()) // the corral children's warm cache
	first, err := s.warmExec(t, "warm: built")
	if err != nil {
		t.Fatalf("first warm exec: %v", err)
	}
	var warm, cold, wCPU, cCPU, wFlt, cFlt []float64
	for i := 0; i < *flagRuns; i++ {
		steps := []func(){
			func() {
				r, err := s.warmExec(t, "warm: restored")
				if err != nil {
					t.Errorf("round %d: warm: %v", i, err)
					return
				}
				warm, wCPU, wFlt = append(warm, ms(r.wall)), append(wCPU, ms(r.cpu)), append(wFlt, float64(r.minflt))
			},
			func() {
				r, err := s.warmExec(t, "", "--cold")
				if err != nil {
					t.Errorf("round %d: cold: %v", i, err)
					return
				}
				cold, cCPU, cFlt = append(cold, ms(r.wall)), append(cCPU, ms(r.cpu)), append(cFlt, float64(r.minflt))
			},
		}
		if i%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, f := range steps {
			f()
		}
		t.Logf("round %d: warm %v ms, cold %v ms", i, last(warm), last(cold))
	}
	w, c := Summarize(warm), Summarize(cold)
	verdict := "n/a"
	if w.N > 0 && c.N > 0 {
		verdict = "met"
		if w.Median*20 > c.Median {
			verdict = "NOT met"
		}
	}
	table("warm exec: `corral exec -- true`, process start to exit (issue 13: warm <= 1/20 of cold: "+verdict+")",
		[]string{"row", "start→exit ms", "VMM CPU ms", "minor page faults"},
		[][]string{
			{"first exec (boot + snapshot)", Summarize([]float64{ms(first.wall)}).Format(0), Summarize([]float64{ms(first.cpu)}).Format(0), Summarize([]float64{float64(first.minflt)}).Format(0)},
			{"warm (restore)", w.Format(0), Summarize(wCPU).Format(0), Summarize(wFlt).Format(0)},
			{"cold (--cold)", c.Format(0), Summarize(cCPU).Format(0), Summarize(cFlt).Format(0)},
			{"ratio warm/cold", Ratio(w, c), Ratio(Summarize(wCPU), Summarize(cCPU)), Ratio(Summarize(wFlt), Summarize(cFlt))},
		})
}

// warmExec runs corral exec --log info with its console in a file and
// checks its log says it went the way want ("warm: built", "warm:
// restored", or "" for --cold: neither).
func (s setup) warmExec(t *testing.T, want string, args ...string) (result, error) {
	con := filepath.Join(t.TempDir(), "console")
	// --workdir /: the test's directory may be under /tmp, the guest's own.
	all := []string{"exec", "--console", con, "--log", *flagExecLog, "--kernel", s.kernel, "--workdir", "/"}
	if s.extra != "" {
		all = append(all, "--cmdline", s.extra)
	}
	all = append(append(all, args...), "--", "true")
	ctx, cancel := context.WithTimeout(context.Background(), *flagTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.corral, all...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	r := result{wall: time.Since(t0)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			r.minflt, r.majflt = ru.Minflt, ru.Majflt
		}
	}
	r.console, _ = os.ReadFile(con)
	if err != nil {
		return r, fmt.Errorf("corral exec: %w; stderr: %s\nconsole ends:\n%s", err, tail(stderr.Bytes(), 8), tail(r.console, 15))
	}
	log := stderr.String()
	if *flagExecLog == "debug" {
		t.Logf("corral exec %q (%v, %d minor and %d major page faults):\n%s\nits console ends:\n%s", args, r.wall.Round(time.Millisecond), r.minflt, r.majflt, log, tail(r.console, 12))
	}
	built, restored := strings.Contains(log, "warm: built"), strings.Contains(log, "warm: restored")
	if (want == "" && (built || restored)) || (want != "" && !strings.Contains(log, want)) {
		return r, fmt.Errorf("corral exec %q: want %q in its log (built %v, restored %v):\n%s", args, want, built, restored, tail(stderr.Bytes(), 8))
	}
	return r, nil
}
