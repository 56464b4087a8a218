// Command devicecpu measures the host CPU per operation of Go benchmarks,
// with and without the VMM's confinement, for bench/device-confined.sh
// (issue 16: no measurable change to the device benchmarks with the
// filter on).
//
// Wall time per operation is what go test reports, but on a shared host it
// moves with everyone else's load. CPU time (user + system, from the
// child's rusage) moves far less. Each benchmark runs in its own process,
// twice per mode and round, at N1 and N2 iterations: the difference of the
// two processes' CPU over N2-N1 is the CPU per operation with the process
// start, the rig's setup and go test's N=1 probe cancelled out. Modes are
// "off" (as is) and "on" (CORRAL_BENCH_CONFINE=on: internal/benchconfine
// applies sandbox.Apply's default policy first), their order alternating
// between rounds.
//
// It writes OUT/off.txt and OUT/on.txt in Go benchmark format (one line a
// benchmark and round, unit cpu-ns/op, and the N2 run's wall ns/op) for
// benchstat.
//
// Usage: devicecpu [-n ROUNDS] [-bench REGEXP] [-cpu DURATION] -o OUT TESTBINARY...
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devicecpu:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("devicecpu", flag.ContinueOnError)
	rounds := fs.Int("n", 6, "rounds (each runs every benchmark in both modes)")
	benchRE := fs.String("bench", ".", "-test.bench regexp selecting the benchmarks")
	cpu := fs.Duration("cpu", 300*time.Millisecond, "CPU time the longer run of a benchmark aims at")
	out := fs.String("o", "", "directory for off.txt and on.txt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() == 0 || *rounds < 1 {
		return errors.New("usage: devicecpu [-n ROUNDS] [-bench REGEXP] [-cpu DURATION] -o OUT TESTBINARY...")
	}
	var benches []bench
	for _, bin := range fs.Args() {
		bs, err := list(bin, *benchRE, *cpu)
		if err != nil {
			return err
		}
		benches = append(benches, bs...)
	}
	if len(benches) == 0 {
		return fmt.Errorf("no benchmark matches %q", *benchRE)
	}
	files := map[string]*os.File{}
	for _, mode := range []string{"off", "on"} {
		f, err := os.Create(filepath.Join(*out, mode+".txt"))
		if err != nil {
			return err
		}
		defer f.Close()
		files[mode] = f
	}
	for r := range *rounds {
		fmt.Fprintf(os.Stderr, "devicecpu: round %d of %d\n", r+1, *rounds)
		modes := []string{"off", "on"}
		if r%2 == 1 {
			modes = []string{"on", "off"}
		}
		for _, b := range benches {
			for _, mode := range modes {
				per, wall, err := b.measure(mode)
				if err != nil {
					return err
				}
				fmt.Fprintf(files[mode], "pkg: %s\nBenchmark%s\t1\t%.1f cpu-ns/op\t%.1f ns/op\n", b.pkg, b.name, per, wall)
			}
		}
	}
	return nil
}

// bench is one (sub-)benchmark of a test binary and its two run lengths.
type bench struct {
	bin, pkg string
	name     string // without "Benchmark" and the -GOMAXPROCS suffix
	n1, n2   int
}

// resultLine matches a benchmark result: name (with go test's
// -GOMAXPROCS suffix: see benchName), iterations, ns/op.
var resultLine = regexp.MustCompile(`^Benchmark(\S+)\s+(\d+)\s+([0-9.]+) ns/op`)

// benchName strips the "-P" go test appends to a benchmark's name when
// GOMAXPROCS P is not 1 (the children inherit this process's).
func benchName(s string) string {
	if p := runtime.GOMAXPROCS(0); p != 1 {
		s = strings.TrimSuffix(s, "-"+strconv.Itoa(p))
	}
	return s
}

// list runs bin's benchmarks matching re once for about 100 ms each, and
// sizes each one's runs so the longer takes about cpu.
func list(bin, re string, cpu time.Duration) ([]bench, error) {
	o, _, err := runBench(bin, "off", re, "100ms")
	if err != nil {
		return nil, err
	}
	var out []bench
	pkg := ""
	sc := bufio.NewScanner(bytes.NewReader(o))
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
		}
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		ns, err := strconv.ParseFloat(m[3], 64)
		if err != nil || ns <= 0 {
			return nil, fmt.Errorf("%s: bad result line %q", bin, line)
		}
		n2 := max(50, int(float64(cpu)/ns))
		out = append(out, bench{bin: bin, pkg: pkg, name: benchName(m[1]), n1: max(10, n2/5), n2: n2})
	}
	return out, nil
}

// measure returns b's CPU nanoseconds per operation in mode, and the wall
// ns/op go test printed for the longer run.
func (b bench) measure(mode string) (cpuPer, wall float64, err error) {
	re := selector(b.name)
	_, c1, err := runBench(b.bin, mode, re, fmt.Sprintf("%dx", b.n1))
	if err != nil {
		return 0, 0, err
	}
	o2, c2, err := runBench(b.bin, mode, re, fmt.Sprintf("%dx", b.n2))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(o2), "\n") {
		if m := resultLine.FindStringSubmatch(line); m != nil && benchName(m[1]) == b.name {
			wall, _ = strconv.ParseFloat(m[3], 64)
		}
	}
	if wall == 0 {
		return 0, 0, fmt.Errorf("%s %s: no result line for %s", b.bin, mode, b.name)
	}
	return float64(c2-c1) / float64(b.n2-b.n1), wall, nil
}

// selector is a -test.bench pattern matching exactly the benchmark name
// (each level of a sub-benchmark anchored).
func selector(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		if i == 0 {
			p = "Benchmark" + p
		}
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// runBench runs bin's benchmarks matching re for benchtime in mode, in a
// fresh temporary directory (the one path a confined run may write), and
// returns the output and the process's CPU time (user + system).
func runBench(bin, mode, re, benchtime string) ([]byte, time.Duration, error) {
	tmp, err := os.MkdirTemp("", "devicecpu-")
	if err != nil {
		return nil, 0, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command(bin, "-test.run", "^$", "-test.bench", re, "-test.benchtime", benchtime, "-test.benchmem")
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp, "CORRAL_BENCH_CONFINE="+mode)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	o, err := cmd.Output()
	if err != nil {
		return nil, 0, fmt.Errorf("%s -test.bench %s (%s): %v: %s", bin, re, mode, err, lastLines(stderr.String()+string(o), 5))
	}
	if mode == "on" && !strings.Contains(stderr.String(), "benchconfine: confined") {
		return nil, 0, fmt.Errorf("%s: CORRAL_BENCH_CONFINE=on but the binary did not say it was confined (no TestMain calling benchconfine.Main?)", bin)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return nil, 0, errors.New("no rusage for the child")
	}
	return o, time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}
