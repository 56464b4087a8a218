package virtiopci

import (
	"log/slog"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog/guestlogtest"

	"github.com/corral-vmm/corral/virtio"
)

func (g *guest) driverFeatures() uint64 {
	g.w32(g.common+ccDriverFeatureSelect, 0)
	lo := g.r32(g.common + ccDriverFeature)
	g.w32(g.common+ccDriverFeatureSelect, 1)
	hi := g.r32(g.common + ccDriverFeature)
	return uint64(hi)<<32 | uint64(lo)
}

// After FEATURES_OK, and after DRIVER_OK, the driver cannot change the
// negotiated features without a reset: driver_feature writes are ignored,
// clearing FEATURES_OK is ignored, so setting it again with other features
// changes nothing (Virtio 1.2 §2.1.2, §3.1.1).
func TestFeaturesFixedAfterFeaturesOK(t *testing.T) {
	const (
		first = virtio.FVersion1 | 1<<3
		other = virtio.FVersion1 | virtio.FEventIdx
		ok    = virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK
	)
	g, dev, _ := fakeSetup(t, 1)

	// Between FEATURES_OK and DRIVER_OK.
	if !g.negotiate(first) {
		t.Fatal("negotiation failed")
	}
	g.setDriverFeatures(other)
	g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver) // clear FEATURES_OK
	g.setDriverFeatures(other)
	g.setStatus(ok) // and set it again with other features
	if f := g.driverFeatures(); f != first {
		t.Fatalf("driver features %#x after renegotiating past FEATURES_OK; want %#x", f, first)
	}
	if st := g.status(); st != ok {
		t.Fatalf("status %#x; want %#x", st, ok)
	}
	c := g.tr.Counters()
	if c.FeatureWritesIgnored != 4 || c.StatusWritesIgnored != 1 {
		t.Fatalf("counters %+v; want 4 feature writes and 1 status write ignored", c)
	}

	// After DRIVER_OK.
	g.setupQueue(0, 16, 0x10000, 0x11000, 0x12000, NoVector)
	g.setStatus(ok | virtio.StatusDriverOK)
	a, n := dev.lastActivation()
	if n != 1 || a.Features != first {
		t.Fatalf("%d activations, features %#x", n, a.Features)
	}
	g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver) // clear FEATURES_OK and DRIVER_OK
	g.setDriverFeatures(other)
	g.setStatus(ok | virtio.StatusDriverOK)
	if f := g.driverFeatures(); f != first {
		t.Fatalf("driver features %#x after renegotiating past DRIVER_OK; want %#x", f, first)
	}
	if _, n := dev.lastActivation(); n != 1 {
		t.Fatalf("device activated %d times; want once", n)
	}
	if st := g.status(); st != ok|virtio.StatusDriverOK {
		t.Fatalf("status %#x; want %#x", st, ok|virtio.StatusDriverOK)
	}
	if c := g.tr.Counters(); c.FeatureWritesIgnored != 6 || c.StatusWritesIgnored != 2 || c.DeviceFailures != 0 {
		t.Fatalf("counters %+v", c)
	}

	// A reset frees the features again.
	if !g.negotiate(other) || g.driverFeatures() != other {
		t.Fatal("negotiation after reset failed")
	}
	if c := g.tr.Counters(); c.Resets != 2 { // negotiate resets first
		t.Fatalf("Resets = %d; want 2", c.Resets)
	}
}

// A guest repeating each fault 10000 times is counted exactly, and each
// kind is logged once (the clock is stopped), not once per fault.
func TestGuestFaultFlood(t *testing.T) {
	logs := &guestlogtest.Warnings{}
	stopped := time.Unix(1000, 0)
	dev := newFakeDevice(1)
	g := newGuest(t, Config{Device: dev, Mem: newTestMem(t), Interrupts: &fakeInterrupts{},
		Logger: slog.New(logs), now: func() time.Time { return stopped }})
	const n = 10000
	for range n {
		g.setStatus(0)
		g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusDriverOK) // no FEATURES_OK: fails
	}
	for range n {
		if g.negotiate(virtio.FVersion1 | 1<<40) { // not offered
			t.Fatal("FEATURES_OK accepted with a feature not offered")
		}
	}
	g.negotiate(virtio.FVersion1)
	for range n {
		g.w32(g.common+ccDriverFeature, 0)
	}
	for range n {
		g.setStatus(virtio.StatusAcknowledge)
	}
	want := Counters{DeviceFailures: n, FeaturesRefused: n, FeatureWritesIgnored: n, StatusWritesIgnored: n, Resets: 2*n + 1}
	if c := g.tr.Counters(); c != want {
		t.Fatalf("Counters() = %+v\nwant         %+v", c, want)
	}
	msgs := logs.ByMessage()
	if len(msgs) != 4 {
		t.Fatalf("log records %v; want 4 kinds", msgs)
	}
	for m, k := range msgs {
		if k != 1 {
			t.Errorf("%q logged %d times; want once", m, k)
		}
	}
	if _, nAct := dev.lastActivation(); nAct != 0 {
		t.Fatalf("device activated %d times", nAct)
	}
}
