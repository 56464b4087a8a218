package agentvm

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

// TestSetupOnProbe: a restored machine's Setup goes on the readiness
// probe's connection (keepProbe): one dial and one agent session for the
// Hello and the Setup, instead of two of each (each a round trip or two
// into the guest). The fake agent has no deferred setup, so it refuses
// the Setup: the refusal shows the request reached it.
func TestSetupOnProbe(t *testing.T) {
	for _, keep := range []bool{false, true} {
		f := newFakeMachine(t)
		f.up.Store(true)
		vm := f.vm(nil)
		vm.keepProbe = keep
		if err := vm.waitAgent(context.Background(), 10*time.Second, exitPowerOff); err != nil {
			t.Fatal(err)
		}
		err := vm.setup(context.Background(), &proto.Setup{Root: "9p:corral-root"})
		if !errors.Is(err, client.ErrRefused) {
			t.Errorf("keepProbe %v: setup = %v, want the agent's refusal", keep, err)
		}
		wantDials := int32(2)
		if keep {
			wantDials = 1
		}
		if n, s := f.dials.Load(), f.srv.Stats().Sessions; n != wantDials || s != uint64(wantDials) {
			t.Errorf("keepProbe %v: %d dials, %d agent sessions; want %d of each", keep, n, s, wantDials)
		}
		if c, _ := vm.takeProbe(); c != nil {
			t.Errorf("keepProbe %v: the probe's connection is still held after setup", keep)
		}
	}
}

// TestKillClosesProbe: a kept probe connection that no Setup took is
// closed with the machine (the agent's session ends).
func TestKillClosesProbe(t *testing.T) {
	f := newFakeMachine(t)
	f.up.Store(true)
	vm := f.vm(nil)
	vm.keepProbe = true
	if err := vm.waitAgent(context.Background(), 10*time.Second, exitPowerOff); err != nil {
		t.Fatal(err)
	}
	c, v := vm.takeProbe()
	if c == nil || v < proto.SetupVersion {
		t.Fatalf("waitAgent kept %v at version %d, want the probe's connection", c, v)
	}
	vm.probe, vm.probeVersion = c, v
	vm.Kill()
	if _, err := c.Write([]byte{0}); err == nil {
		t.Error("the probe's connection is still open after Kill")
	}
}
