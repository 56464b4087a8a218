package agentvm

import (
	"testing"

	"github.com/corral-vmm/corral"
)

// TestCloseNothingToSync: a machine none of whose guest writes can reach
// the host is stopped by Close without a power-off request (no dial, no
// sync); one with a writable share is still synced through the agent.
func TestCloseNothingToSync(t *testing.T) {
	for _, noHostWrites := range []bool{false, true} {
		f, synced := slowPowerOff(t)
		vm := f.vm(nil)
		vm.noHostWrites = noHostWrites
		if err := vm.Close(); err != nil {
			t.Fatal(err)
		}
		if !f.stopped.Load() {
			t.Errorf("noHostWrites %v: the machine was not stopped", noHostWrites)
		}
		if n := f.dials.Load(); (n == 0) != noHostWrites || synced.Load() == noHostWrites {
			t.Errorf("noHostWrites %v: %d dials, synced %v; want the agent asked only when writes reach the host", noHostWrites, n, synced.Load())
		}
	}
}

func TestWritesReachHost(t *testing.T) {
	for _, tc := range []struct {
		c    corral.Config
		want bool
	}{
		{corral.Config{}, false},
		{corral.Config{Shares: []corral.Share{{Path: "/", Tag: "r", ReadOnly: true}, {Path: "/e", Tag: "s", ReadOnly: true}}}, false},
		{corral.Config{Shares: []corral.Share{{Path: "/", Tag: "r", ReadOnly: true}, {Path: "/w", Tag: "s"}}}, true},
		{corral.Config{Disks: []corral.Disk{{Path: "/d.img", ReadOnly: true}}}, false},
		{corral.Config{Disks: []corral.Disk{{Path: "/d.img"}}}, true},
	} {
		if got := writesReachHost(tc.c); got != tc.want {
			t.Errorf("writesReachHost(%+v) = %v, want %v", tc.c, got, tc.want)
		}
	}
}
