package client_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
)

// TestPowerOffSyncsBeforeAck: the agent syncs before it acks a power-off
// (the host may stop the machine on the Ack), and says so.
func TestPowerOffSyncsBeforeAck(t *testing.T) {
	var synced atomic.Bool
	off := make(chan struct{}, 1)
	_, dial := serve(t, agent.Config{
		Sync:     func() { time.Sleep(50 * time.Millisecond); synced.Store(true) },
		PowerOff: func() error { off <- struct{}{}; return nil },
	})
	ok, err := client.PowerOffSynced(context.Background(), dial())
	if err != nil {
		t.Fatal(err)
	}
	if !ok || !synced.Load() {
		t.Errorf("PowerOffSynced: synced %v, the agent had synced %v; want both", ok, synced.Load())
	}
	select {
	case <-off:
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not power off")
	}
}
