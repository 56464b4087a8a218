//go:build linux && amd64

package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
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
	start := time.Now()
	last := start
	_, err := apply(p, func(step string) {
		now := time.Now()
		fmt.Fprintf(&out, "step %s %d\n", step, now.Sub(last).Nanoseconds())
		last = now
	})
	fmt.Fprintf(&out, "step total %d\n", time.Since(start).Nanoseconds())
	if err != nil {
		fmt.Fprintln(os.Stderr, "apply:", err)
		return 2
	}
	os.Stdout.Write(out.Bytes())
	return 0
}

// BenchmarkApplySteps runs Apply in a fresh child process per op (it is
// once per process) and reports the mean time of each step in µs: where
// confinement's start-up cost goes.
func BenchmarkApplySteps(b *testing.B) {
	for _, mode := range []string{"on", "off"} {
		b.Run("seccomp="+mode, func(b *testing.B) {
			sums := map[string]time.Duration{}
			n := 0
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
					sums[f[1]] += time.Duration(ns)
				}
				n++
			}
			for _, step := range slices.Sorted(func(yield func(string) bool) {
				for k := range sums {
					if !yield(k) {
						return
					}
				}
			}) {
				b.ReportMetric(float64(sums[step].Microseconds())/float64(n), step+"-µs")
			}
		})
	}
}
