//go:build linux && amd64

package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// stepsChild applies the default policy (as the "hold" child does) and
// prints how long each of Apply's steps took, "step NAME NS" a line.
func stepsChild() int {
	dir := os.Getenv("DIR")
	p := Policy{ReadPaths: []string{filepath.Join(dir, "allowed"), "/proc/self", "/proc/sys/kernel/random/boot_id"},
		KeepCaps: !AllThreadsSupported(), Seccomp: SeccompEnforce}
	if os.Getenv("SECCOMP") == "off" {
		p.Seccomp = SeccompOff
	}
	var out bytes.Buffer
	stops := otherStops()
	start := time.Now()
	last := start
	rep, err := apply(p, func(step string) {
		now := time.Now()
		fmt.Fprintf(&out, "step %s %d\n", step, now.Sub(last).Nanoseconds())
		last = now
	})
	fmt.Fprintf(&out, "step total %d\n", time.Since(start).Nanoseconds())
	fmt.Fprintf(&out, "stops %d landlock %d caps %v\n", otherStops()-stops, rep.Landlock, rep.CapsDropped)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apply:", err)
		return 2
	}
	os.Stdout.Write(out.Bytes())
	return 0
}

// otherStops returns how many times the runtime has stopped the world for
// something other than the GC: syscall.AllThreadsSyscall does, once a call.
func otherStops() uint64 {
	s := []metrics.Sample{{Name: "/sched/pauses/total/other:seconds"}}
	metrics.Read(s)
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return n
}

// Apply stops the world once per setting that every thread must take:
// Landlock and the capability drop, and no_new_privs only when no seccomp
// filter (whose TSYNC copies it) follows. Each stop is a round of signals
// to every thread: the costliest part of Apply under emulation.
func TestApplyStopsTheWorld(t *testing.T) {
	if !AllThreadsSupported() {
		t.Skip("a cgo binary cannot apply per-thread settings to every thread")
	}
	for _, mode := range []string{"on", "off"} {
		t.Run("seccomp="+mode, func(t *testing.T) {
			cmd := childCmd(t, "steps", "SECCOMP="+mode)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v; stderr:\n%s", err, stderr.String())
			}
			var stops, abi int
			var caps bool
			i := bytes.Index(out, []byte("stops "))
			if i < 0 {
				t.Fatalf("child printed no stops line:\n%s", out)
			}
			if _, err := fmt.Sscanf(string(out[i:]), "stops %d landlock %d caps %t", &stops, &abi, &caps); err != nil {
				t.Fatalf("child's stops line: %v:\n%s", err, out)
			}
			want := 0
			if abi > 0 {
				want++
			}
			if caps {
				want++
			}
			if mode == "off" {
				want++ // no_new_privs
			}
			if stops != want {
				t.Errorf("Apply stopped the world %d times, want %d (Landlock ABI %d, caps dropped %v, seccomp %s)", stops, want, abi, caps, mode)
			}
		})
	}
}

// BenchmarkApplySteps runs Apply in a fresh child process per op (it is
// once per process) and reports the median time of each step in µs (the
// median: a loaded host's stalls land on a few ops): where confinement's
// start-up cost goes.
func BenchmarkApplySteps(b *testing.B) {
	for _, mode := range []string{"on", "off"} {
		b.Run("seccomp="+mode, func(b *testing.B) {
			steps := map[string][]time.Duration{}
			for b.Loop() {
				cmd := childCmd(b, "steps", "SECCOMP="+mode)
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				out, err := cmd.Output()
				if err != nil {
					b.Fatalf("child: %v; stderr:\n%s", err, stderr.String())
				}
				sc := bufio.NewScanner(bytes.NewReader(out))
				for sc.Scan() {
					f := strings.Fields(sc.Text())
					if len(f) != 3 || f[0] != "step" {
						continue
					}
					ns, err := strconv.ParseInt(f[2], 10, 64)
					if err != nil {
						b.Fatalf("child printed %q", sc.Text())
					}
					steps[f[1]] = append(steps[f[1]], time.Duration(ns))
				}
			}
			for step, ds := range steps {
				slices.Sort(ds)
				b.ReportMetric(float64(ds[len(ds)/2].Nanoseconds())/1e3, step+"-µs")
			}
		})
	}
}
