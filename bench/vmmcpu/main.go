// Command vmmcpu measures the CPU a VMM spends per frame on its network
// device, or per request on its disk, beside its vCPU, for bench/net-pps.sh
// and bench/blk-seqread.sh.
//
// While the VMM runs it samples, every -interval, the on-CPU time of each of
// the process's threads (/proc/PID/task/TID/schedstat, nanoseconds) and one
// counter of the TAP (/sys/class/net/TAP/statistics/COUNTER: rx_packets
// counts frames the VMM wrote, guest→host; tx_packets frames it read,
// host→guest). Run it in the TAP's network namespace (ip netns exec), where
// /sys/class/net shows that namespace.
//
// With -io-unit N instead of -tap and -counter, the counter is the bytes
// the process has read by system calls (rchar in /proc/PID/io) divided by
// N: with N the guest's request size, disk requests served (both VMMs read
// the image with read or preadv calls; the figure says "frames" still).
//
// Sampling starts once the TAP exists (a VMM may create it after it starts)
// and ends when the process or the TAP goes. The window is steady state only: from the first sample after the counter
// began to move to the last sample before it stopped (or the process or the
// TAP went away). Over it, the busiest thread is taken for the vCPU (the
// test guests busy-poll, so it runs all the time; Corral locks its vCPU
// goroutine to a thread; QEMU's is "CPU 0/KVM" with -name debug-threads=on)
// and every other thread is the rest: device, I/O and runtime threads. It
// prints one line:
//
//	vmmcpu: F frames in S s: vcpu C% (comm), rest R% = U us/frame over T threads
//
// C% and R% are of one CPU. Without two samples inside a moving window it
// prints "vmmcpu: no steady window (...)".
//
// Usage: vmmcpu -pid PID {-tap NAME -counter rx_packets|tx_packets | -io-unit BYTES} [-interval 50ms] [-timeout 120s]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "vmmcpu:", err)
		os.Exit(1)
	}
}

// sample is one look at the process and the TAP.
type sample struct {
	at      time.Time
	frames  uint64
	threads map[int]uint64 // tid → on-CPU ns
	comm    map[int]string
}

// errGone: the process or the TAP is no more; sampling ends.
var errGone = errors.New("gone")

// counter reads the frame counter.
type counter func() (uint64, error)

// fileCounter reads a file that holds one number (a TAP statistic).
func fileCounter(path string) counter {
	return func() (uint64, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, errGone
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		return n, nil
	}
}

// ioCounter reads rchar from /proc/PID/io, in units of unit bytes.
func ioCounter(path string, unit uint64) counter {
	return func() (uint64, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, errGone
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "rchar:"); ok {
				n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("%s: %w", path, err)
				}
				return n / unit, nil
			}
		}
		return 0, fmt.Errorf("%s: no rchar line", path)
	}
}

// take reads one sample; errGone when the process or the TAP has gone.
func take(proc string, pid int, frames counter) (sample, error) {
	s := sample{at: time.Now(), threads: map[int]uint64{}, comm: map[int]string{}}
	var err error
	if s.frames, err = frames(); err != nil {
		return s, err
	}
	tasks, err := os.ReadDir(filepath.Join(proc, strconv.Itoa(pid), "task"))
	if err != nil || len(tasks) == 0 {
		return s, errGone
	}
	for _, e := range tasks {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(proc, strconv.Itoa(pid), "task", e.Name())
		ns, err := readSchedstat(filepath.Join(dir, "schedstat"))
		if err != nil {
			continue // the thread ended between ReadDir and here
		}
		s.threads[tid] = ns
		if c, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
			s.comm[tid] = strings.TrimSpace(string(c))
		}
	}
	return s, nil
}

// processAlive reports whether /proc/PID still exists.
func processAlive(proc string, pid int) bool {
	_, err := os.Stat(filepath.Join(proc, strconv.Itoa(pid)))
	return err == nil
}

// readSchedstat returns the first field of a schedstat file: time on CPU, ns.
func readSchedstat(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 0, fmt.Errorf("%s: empty", path)
	}
	return strconv.ParseUint(f[0], 10, 64)
}

// result is the steady-state figure between two samples.
type result struct {
	frames   uint64
	span     time.Duration
	vcpuNS   uint64
	vcpuComm string
	restNS   uint64
	nthreads int
	threads  []threadUse // every thread but the vCPU that ran, busiest first
}

// threadUse is one thread's CPU over the window.
type threadUse struct {
	tid  int
	comm string
	ns   uint64
}

// window picks the steady span of samples: a is the first sample after the
// counter first moved, b the last one before it stopped moving. ok is false
// if they are not two distinct samples.
func window(ss []sample) (a, b int, ok bool) {
	a = -1
	for i := 1; i < len(ss); i++ {
		if ss[i].frames > ss[i-1].frames {
			if a < 0 {
				a = i
			}
			b = i - 1
		}
	}
	return a, b, a >= 0 && b > a
}

// measure compares two samples: the busiest thread is the vCPU.
func measure(from, to sample) result {
	r := result{frames: to.frames - from.frames, span: to.at.Sub(from.at)}
	tids := make([]int, 0, len(to.threads))
	for tid := range to.threads {
		tids = append(tids, tid)
	}
	sort.Ints(tids) // deterministic choice between equal threads
	var total uint64
	vcpu := -1
	for _, tid := range tids {
		d := to.threads[tid] - from.threads[tid] // a thread new since "from" counts from 0
		if to.threads[tid] < from.threads[tid] {
			d = 0
		}
		total += d
		if vcpu < 0 || d > r.vcpuNS {
			vcpu, r.vcpuNS = tid, d
		}
	}
	r.restNS = total - r.vcpuNS
	r.vcpuComm = to.comm[vcpu]
	for _, tid := range tids {
		d := to.threads[tid] - from.threads[tid]
		if tid == vcpu || to.threads[tid] <= from.threads[tid] {
			continue
		}
		r.threads = append(r.threads, threadUse{tid: tid, comm: to.comm[tid], ns: d})
	}
	sort.SliceStable(r.threads, func(i, j int) bool { return r.threads[i].ns > r.threads[j].ns })
	r.nthreads = len(tids)
	return r
}

func (r result) String() string {
	sec := r.span.Seconds()
	perFrame := 0.0
	if r.frames > 0 {
		perFrame = float64(r.restNS) / 1e3 / float64(r.frames)
	}
	return fmt.Sprintf("vmmcpu: %d frames in %.3f s: vcpu %.0f%% (%s), rest %.1f%% = %.2f us/frame over %d threads",
		r.frames, sec, float64(r.vcpuNS)/1e9/sec*100, r.vcpuComm, float64(r.restNS)/1e9/sec*100, perFrame, r.nthreads)
}

// Threads lists the threads beside the vCPU, one line each, with their
// share of the per-frame figure.
func (r result) Threads() string {
	var b strings.Builder
	for _, t := range r.threads {
		perFrame := 0.0
		if r.frames > 0 {
			perFrame = float64(t.ns) / 1e3 / float64(r.frames)
		}
		fmt.Fprintf(&b, "vmmcpu:   thread %d (%s): %.2f us/frame\n", t.tid, t.comm, perFrame)
	}
	return b.String()
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("vmmcpu", flag.ContinueOnError)
	pid := fs.Int("pid", 0, "the VMM process (required)")
	tap := fs.String("tap", "", "the VMM's TAP (required)")
	counterName := fs.String("counter", "", "TAP statistic to follow: rx_packets (guest→host) or tx_packets (host→guest)")
	ioUnit := fs.Uint64("io-unit", 0, "follow the bytes the process read (rchar) in units of this many bytes, instead of a TAP")
	interval := fs.Duration("interval", 50*time.Millisecond, "sampling interval")
	timeout := fs.Duration("timeout", 120*time.Second, "stop sampling after this long")
	proc := fs.String("proc", "/proc", "procfs mount (tests)")
	sys := fs.String("sys", "/sys/class/net", "sysfs network class directory (tests)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var frames counter
	switch {
	case *pid <= 0 || *interval <= 0:
		return fmt.Errorf("want -pid and a positive -interval")
	case *ioUnit > 0 && *tap == "" && *counterName == "":
		frames = ioCounter(filepath.Join(*proc, strconv.Itoa(*pid), "io"), *ioUnit)
	case *ioUnit == 0 && *tap != "" && (*counterName == "rx_packets" || *counterName == "tx_packets"):
		frames = fileCounter(filepath.Join(*sys, *tap, "statistics", *counterName))
	default:
		return fmt.Errorf("want either -tap and -counter rx_packets|tx_packets, or -io-unit")
	}
	var ss []sample
	end := time.Now().Add(*timeout)
	for time.Now().Before(end) {
		s, err := take(*proc, *pid, frames)
		if errors.Is(err, errGone) {
			if len(ss) == 0 && processAlive(*proc, *pid) {
				time.Sleep(*interval) // the VMM has not made its TAP yet
				continue
			}
			break
		}
		if err != nil {
			return err
		}
		ss = append(ss, s)
		time.Sleep(*interval)
	}
	a, b, ok := window(ss)
	if !ok {
		fmt.Fprintf(stdout, "vmmcpu: no steady window (%d samples, first moving %d, last moving %d)\n", len(ss), a, b)
		return nil
	}
	r := measure(ss[a], ss[b])
	fmt.Fprintln(stdout, r.String())
	fmt.Fprint(stdout, r.Threads())
	return nil
}
