package agentvm

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
)

// slowPowerOff is a fake machine whose guest takes a while to power off
// after its agent synced and acked; synced says the agent synced.
func slowPowerOff(t *testing.T) (f *fakeMachine, synced *atomic.Bool) {
	f = newFakeMachine(t)
	f.up.Store(true)
	synced = new(atomic.Bool)
	f.srv = agent.NewServer(agent.Config{
		Sync: func() { synced.Store(true) },
		PowerOff: func() error {
			time.Sleep(time.Second) // the kernel's shutdown path
			f.end()
			return nil
		},
	})
	return f, synced
}

// TestCloseStopsOnSyncedAck: with no writable disk, Close stops the
// machine once the agent has synced and acked, without waiting for the
// guest's power-off.
func TestCloseStopsOnSyncedAck(t *testing.T) {
	f, synced := slowPowerOff(t)
	vm := f.vm(nil)
	t0 := time.Now()
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 500*time.Millisecond || !synced.Load() || !f.stopped.Load() {
		t.Errorf("Close took %v (synced %v, stopped %v); want it to stop the synced machine at once", d, synced.Load(), f.stopped.Load())
	}
}

// TestCloseWaitsWithWritableDisk: a machine with a writable disk powers
// off the guest's way (its writes are in the device, not yet on the host).
func TestCloseWaitsWithWritableDisk(t *testing.T) {
	f, synced := slowPowerOff(t)
	vm := f.vm(nil)
	vm.writableDisk = true
	t0 := time.Now()
	if err := vm.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d < time.Second || !synced.Load() {
		t.Errorf("Close took %v (synced %v); want it to wait for the guest's power-off", d, synced.Load())
	}
}

func TestHasWritableDisk(t *testing.T) {
	for _, tc := range []struct {
		disks []corral.Disk
		want  bool
	}{
		{nil, false},
		{[]corral.Disk{{Path: "a", ReadOnly: true}}, false},
		{[]corral.Disk{{Path: "a", ReadOnly: true}, {Path: "b"}}, true},
	} {
		if got := hasWritableDisk(corral.Config{Disks: tc.disks}); got != tc.want {
			t.Errorf("%v: %v, want %v", tc.disks, got, tc.want)
		}
	}
}
