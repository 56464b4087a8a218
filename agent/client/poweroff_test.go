package client

import (
	"context"
	"testing"

	"github.com/corral-vmm/corral/agent/proto"
)

// TestPowerOffSyncedByVersion: an agent's Ack promises the sync only from
// proto.SyncedPowerOffVersion on; an older agent acked before syncing,
// so the host must wait for its power-off.
func TestPowerOffSyncedByVersion(t *testing.T) {
	for _, tc := range []struct {
		v    uint16
		want bool
	}{
		{proto.SyncedPowerOffVersion - 1, false},
		{1, false},
		{proto.SyncedPowerOffVersion, true},
		{proto.Version, true},
	} {
		synced, err := PowerOffSynced(context.Background(), fakeAgent(frames(t, hello(tc.v), proto.Frame{Type: proto.TypeAck})))
		if err != nil || synced != tc.want {
			t.Errorf("version %d agent: synced %v, %v; want %v", tc.v, synced, err, tc.want)
		}
	}
	if synced, err := PowerOffSynced(context.Background(), fakeAgent(frames(t, hello(proto.Version)))); err == nil || synced {
		t.Errorf("agent hung up before its Ack: synced %v, %v; want an error", synced, err)
	}
}
