// Command guestjitter measures how much of a guest vCPU's time its ring-3
// code keeps: it reads the clock in a tight loop (time.Now, which the vDSO
// answers without entering the kernel) and sorts every gap between two
// reads into buckets. On a host whose KVM emulates guest ring 0
// (docs/nested-kvm.md) the gaps are the guest kernel's interrupts and
// their emulated handlers, so two VMMs can be compared by running it in
// both guests. bench/results/2026-12-07-periodic-tick-kvm-pvm.md used it.
//
//	guestjitter [DURATION]    (default 20s)
//
// Build it static (CGO_ENABLED=0) and run it in the guest, for example with
// corral exec --cold --workdir / -- /path/to/guestjitter 20s. It also prints
// the guest's clock-event device (/proc/timer_list), its ARAT and TSC-deadline
// CPUID flags, and its local-timer interrupt count before and after.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"
)

// minGap is the shortest gap counted as time away from the loop; reads
// themselves take tens of nanoseconds.
const minGap = 5 * time.Microsecond

// bucketEdges are the lower edges of the gap buckets after minGap.
var bucketEdges = []time.Duration{50 * time.Microsecond, 500 * time.Microsecond,
	2 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond}

// histogram counts gaps of at least minGap by bucket.
type histogram struct {
	count []int
	total []time.Duration
	reads int
}

func newHistogram() *histogram {
	n := len(bucketEdges) + 1
	return &histogram{count: make([]int, n), total: make([]time.Duration, n)}
}

// add records the gap between two consecutive clock reads.
func (h *histogram) add(gap time.Duration) {
	h.reads++
	if gap < minGap {
		return
	}
	i := 0
	for i < len(bucketEdges) && gap >= bucketEdges[i] {
		i++
	}
	h.count[i]++
	h.total[i] += gap
}

// away is the total of the counted gaps.
func (h *histogram) away() time.Duration {
	var t time.Duration
	for _, d := range h.total {
		t += d
	}
	return t
}

func (h *histogram) print(w io.Writer, elapsed time.Duration) {
	fmt.Fprintf(w, "loop: %v, %d reads, away %v (%.0f%%)\n", elapsed.Round(time.Millisecond), h.reads,
		h.away().Round(time.Millisecond), 100*float64(h.away())/float64(elapsed))
	lo := minGap
	for i := range h.count {
		hi := "∞"
		if i < len(bucketEdges) {
			hi = bucketEdges[i].String()
		}
		mean := time.Duration(0)
		if h.count[i] > 0 {
			mean = h.total[i] / time.Duration(h.count[i])
		}
		fmt.Fprintf(w, "  gaps [%v, %s): %d, total %v, mean %v\n", lo, hi, h.count[i],
			h.total[i].Round(time.Microsecond), mean.Round(time.Microsecond))
		if i < len(bucketEdges) {
			lo = bucketEdges[i]
		}
	}
}

// loop reads the clock until d has passed and returns the histogram.
func loop(d time.Duration) (*histogram, time.Duration) {
	h := newHistogram()
	t0 := time.Now()
	prev := t0
	for {
		t := time.Now()
		h.add(t.Sub(prev))
		prev = t
		if t.Sub(t0) >= d {
			return h, t.Sub(t0)
		}
	}
}

// localTimer returns the LOC line of /proc/interrupts, or "".
func localTimer() string {
	b, _ := os.ReadFile("/proc/interrupts")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "LOC:") {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return ""
}

// clockEvents returns the clock-event lines of /proc/timer_list.
func clockEvents() []string {
	b, _ := os.ReadFile("/proc/timer_list")
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range []string{"Clock Event Device:", "event_handler:", "hres_active"} {
			if strings.Contains(l, k) {
				out = append(out, strings.TrimSpace(l))
			}
		}
	}
	return out
}

func main() {
	d := 20 * time.Second
	if len(os.Args) > 1 {
		var err error
		if d, err = time.ParseDuration(os.Args[1]); err != nil || d <= 0 {
			fmt.Fprintf(os.Stderr, "guestjitter: bad duration %q (want e.g. 20s)\n", os.Args[1])
			os.Exit(2)
		}
	}
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	flags := " " + string(cpuinfo) + " "
	fmt.Printf("cpuid: arat=%v tsc_deadline_timer=%v\n", strings.Contains(flags, " arat "), strings.Contains(flags, " tsc_deadline_timer "))
	for _, l := range clockEvents() {
		fmt.Println("timer_list:", l)
	}
	before := localTimer()
	h, elapsed := loop(d)
	after := localTimer()
	h.print(os.Stdout, elapsed)
	fmt.Printf("interrupts before: %s\ninterrupts after:  %s\n", before, after)
}
