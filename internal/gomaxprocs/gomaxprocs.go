// Package gomaxprocs sizes the Go runtime's processor count (GOMAXPROCS)
// for a process that runs virtual machines: corral run, corral exec and
// the containerd shim, which each own their process. The corral package
// leaves it alone: a program that embeds it owns its runtime.
//
// Why: a vCPU goroutine spends its life in KVM_RUN, a system call, and
// keeps its P there until the runtime's sysmon takes it, one sysmon round
// later (20 us to 10 ms, as sysmon backs off). With no more Ps than vCPUs,
// a device goroutine woken by a guest's kick, or the runtime's network
// poller, waits for that round. In tests/tcgkvm (one host CPU, so
// GOMAXPROCS 1; a guest of 2 vCPUs streaming TCP to the host) the
// stream's medians were 8.3-10.9 MiB/s by default and 12.0-14.4 MiB/s
// with GOMAXPROCS 3 or 4 in the same rounds
// (bench/results/2026-12-08-sysmon-retake-kvm-pvm.md).
package gomaxprocs

import (
	"os"
	"runtime"
)

// Reserve raises GOMAXPROCS to vcpus+1 if it is lower, so that one P is
// left for the devices while every vCPU is in KVM_RUN, unless the
// GOMAXPROCS environment variable chose it.
func Reserve(vcpus int) {
	reserve(vcpus, os.LookupEnv)
}

// reserve is Reserve with the environment given; it returns GOMAXPROCS as
// it then is.
func reserve(vcpus int, lookup func(string) (string, bool)) int {
	cur := runtime.GOMAXPROCS(0)
	if _, set := lookup("GOMAXPROCS"); set {
		return cur
	}
	if want := vcpus + 1; cur < want {
		runtime.GOMAXPROCS(want)
		return want
	}
	return cur
}
