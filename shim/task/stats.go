package task

import (
	stats "github.com/containerd/cgroups/v3/cgroup2/stats"
)

// metrics is a VM's counters in the form runc's shim v2 reports on a
// cgroup v2 host, which containerd and the CRI plugin read.
func metrics(s VMStats) *stats.Metrics {
	return &stats.Metrics{
		CPU:    &stats.CPUStat{UsageUsec: s.CPUUsec},
		Memory: &stats.MemoryStat{Usage: s.MemoryUsage, UsageLimit: s.MemoryLimit},
	}
}
