// Package resched lets a goroutine that loops on system calls, and never
// blocks in Go, pass through the Go scheduler every few milliseconds.
//
// Why: the runtime's sysmon treats a P whose scheduler tick has not moved
// for 10 ms as running one goroutine too long. When that goroutine is in a
// system call, sysmon takes the P away; the goroutine gets an idle P back
// when the call returns, without rescheduling, so the tick still has not
// moved and sysmon takes the P again on its next round, and so on. Each
// taking resets sysmon's back-off, so sysmon wakes every 20-100 us instead
// of every 10 ms, and every return from a system call takes an idle P
// under the scheduler's lock. A virtio-net receive loop reading its TAP and
// a virtio-blk worker blocked on its kick eventfd loop like that: on
// virtio-net receive sysmon cost 0.6 us of host CPU per frame, and on
// 512 KiB virtio-blk reads 20 us per request
// (bench/results/2026-12-08-sysmon-retake-kvm-pvm.md). A runtime.Gosched
// every few milliseconds moves the tick, and sysmon backs off. (A vCPU
// loops on KVM_RUN too, but over a Linux guest's run sysmon cost 0.14% of
// a core: its long runs are taken once each. It has no Point.)
package resched

import (
	"runtime"
	"time"
)

// Every is the longest a Point lets pass between yields: under sysmon's
// 10 ms, with room for an iteration that ran long.
const Every = 5 * time.Millisecond

// Point is a loop's rescheduling point: call Check once per iteration. The
// zero value is ready; one goroutine owns a Point.
type Point struct {
	last time.Time // monotonic: the last yield, or the first Check
}

// Check yields the processor (runtime.Gosched) when Every has passed since
// it last did, so the goroutine's P is seen to schedule. It costs one
// clock read otherwise. On a goroutine locked to its thread a yield hands
// the P to another thread and back: it works, but costs more.
func (p *Point) Check() {
	if p.due(time.Now()) {
		runtime.Gosched()
	}
}

// due reports whether a yield is due at now, and if so starts the next
// period.
func (p *Point) due(now time.Time) bool {
	if p.last.IsZero() {
		p.last = now
		return false
	}
	if now.Sub(p.last) < Every {
		return false
	}
	p.last = now
	return true
}
