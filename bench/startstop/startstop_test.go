// Package startstop measures the hello test guest from process start to
// exit under corral run and under QEMU -M microvm, alternating, and breaks
// Corral's time into phases from its debug log (issue 15, "Start and
// stop"). Run it where there is KVM; on hosts without /dev/kvm inside
// tests/tcgkvm with -l2-qemu and the corral binary in -host-files (see
// bench/results/2026-12-06-start-stop.md for the command).
package startstop

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/bench/agentvsqemu"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

var (
	flagCorral = flag.String("corral", "", "corral binary (default $CORRAL; without either the test skips)")
	flagRuns   = flag.Int("runs", 9, "rounds (corral, corral --log debug and QEMU alternating)")
	flagExtra  = flag.String("corralargs", "", "extra corral run arguments, space-separated (A/B of an option)")
)

// firstWrite records when the first byte arrives and keeps everything.
type firstWrite struct {
	mu  sync.Mutex
	at  time.Time
	buf bytes.Buffer
}

func (f *firstWrite) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.at.IsZero() && len(p) > 0 {
		f.at = time.Now()
	}
	return f.buf.Write(p)
}

// phases are the debug log's lines whose arrival on stderr the corral
// debug row times, in the order they are written.
var phases = []string{"vm.created", "sandbox.applied", "vm.registered", "vm.started", "vm.ending", "vm.release", "vm.ended"}

type run struct {
	first, exit time.Duration
	marks       []time.Duration // per phases entry, from start; 0 if not seen
	stderr      string
}

// timed runs name args, wanting exit status want, and times its first
// stdout byte, its stderr marks and its reaping from just before the fork.
func timed(want int, name string, args ...string) (run, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	out := &firstWrite{}
	errw := agentvsqemu.NewLineTimer(phases...)
	cmd.Stdout, cmd.Stderr = out, errw
	t0 := time.Now()
	err := cmd.Run()
	r := run{exit: time.Since(t0), stderr: errw.String()}
	if !out.at.IsZero() {
		r.first = out.at.Sub(t0)
	}
	for _, at := range errw.At {
		var d time.Duration
		if !at.IsZero() {
			d = at.Sub(t0)
		}
		r.marks = append(r.marks, d)
	}
	if got := cmd.ProcessState.ExitCode(); got != want {
		return r, fmt.Errorf("%s: exit %d (%v), want %d; stdout %q; stderr %s", name, got, err, want, out.buf.String(), r.stderr)
	}
	if r.first == 0 {
		return r, fmt.Errorf("%s: no console output", name)
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// TestStartStop alternates corral run, corral run --log debug and QEMU
// microvm on the hello guest (exit=7, 64 MiB) and logs medians, ranges,
// ratios and Corral's phases.
func TestStartStop(t *testing.T) {
	testenv.MustHaveKVM(t)
	corral := *flagCorral
	if corral == "" {
		corral = os.Getenv("CORRAL")
	}
	if corral == "" {
		// A measurement, run by hand or by bench scripts, not a check:
		// go test ./... on a KVM host (CI) must not run or fail it.
		t.Skip("a measurement: pass -corral BINARY or set $CORRAL to run it")
	}
	qemu := os.Getenv("QEMU")
	if qemu == "" {
		qemu = testenv.MustHaveQEMU(t)
	}
	hello := guests.BuildT(t, "hello")
	corralArgs := []string{"run", "--kernel", hello, "--memory", "64M", "--cmdline", "exit=7"}
	corralArgs = append(corralArgs, strings.Fields(*flagExtra)...)
	// bench/boot-latency.sh's microvm row; isa-debug-exit turns 7 into 15.
	qemuArgs := []string{"-M", "microvm", "-enable-kvm", "-cpu", "kvm64", "-m", "64M", "-nodefaults",
		"-nographic", "-no-reboot", "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=1",
		"-kernel", hello, "-append", "exit=7"}
	rows := []struct {
		name string
		want int
		bin  string
		args []string
	}{
		{"corral", 7, corral, corralArgs},
		{"corral --log debug", 7, corral, append(append([]string{}, corralArgs...), "--log", "debug")},
		{"qemu -M microvm", 15, qemu, qemuArgs},
	}
	first := make([][]float64, len(rows))
	exit := make([][]float64, len(rows))
	marks := make([][]float64, len(phases)+1) // the last: to the reaping
	var lastDebug string
	for i := range *flagRuns + 1 {
		for j := range rows {
			row := rows[(i+j)%len(rows)] // rotate who goes first
			k := (i + j) % len(rows)
			r, err := timed(row.want, row.bin, row.args...)
			if err != nil {
				t.Fatalf("%s round %d: %v", row.name, i, err)
			}
			if i == 0 {
				continue // warm-up: page cache, first exec
			}
			first[k] = append(first[k], ms(r.first))
			exit[k] = append(exit[k], ms(r.exit))
			if k == 1 {
				lastDebug = r.stderr
				// Each phase as its own run's difference from the mark
				// before (medians of arrival times do not subtract).
				prev := time.Duration(0)
				for p, d := range append(r.marks, r.exit) {
					if d > 0 {
						marks[p] = append(marks[p], ms(d-prev))
						prev = d
					}
				}
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-20s %-28s %-28s\n", "row", "first byte ms", "exit ms")
	st := func(xs []float64) agentvsqemu.Stats { return agentvsqemu.Summarize(xs) }
	for k, row := range rows {
		fmt.Fprintf(&b, "%-20s %-28s %-28s\n", row.name, st(first[k]).Format(1), st(exit[k]).Format(1))
	}
	fmt.Fprintf(&b, "corral / qemu: first byte %s, exit %s\n",
		agentvsqemu.Ratio(st(first[0]), st(first[2])), agentvsqemu.Ratio(st(exit[0]), st(exit[2])))
	fmt.Fprintf(&b, "corral --log debug, ms from the previous mark to each log line's arrival on stderr (per run):\n")
	for p, name := range append(append([]string{}, phases...), "reaped") {
		fmt.Fprintf(&b, "  %-16s %s\n", name, st(marks[p]).Format(1))
	}
	fmt.Fprintf(&b, "  %-16s %s (from start)\n", "first byte", st(first[1]).Format(1))
	fmt.Fprintf(&b, "last debug log:\n%s", lastDebug)
	t.Log("\n" + b.String())
}
