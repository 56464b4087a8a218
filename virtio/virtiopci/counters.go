package virtiopci

import "sync/atomic"

// Counters are a function's guest-fault counters since New. Each is a
// driver action the transport refused or that failed the device; none
// affects the host.
type Counters struct {
	FeaturesRefused      uint64 // FEATURES_OK refused: features not offered, or VIRTIO_F_VERSION_1 not accepted
	FeatureWritesIgnored uint64 // driver_feature writes after FEATURES_OK (the features are fixed until reset)
	StatusWritesIgnored  uint64 // device_status writes that would clear a bit without a reset
	DeviceFailures       uint64 // times the device entered DEVICE_NEEDS_RESET (a guest protocol error, or activation failed)
	Resets               uint64 // driver resets (device_status 0)
}

type counter int

const (
	cFeaturesRefused counter = iota
	cFeatureWritesIgnored
	cStatusWritesIgnored
	cDeviceFailures
	cResets
	numCounters
)

// counters is safe for concurrent use: device workers fail the device from
// their goroutines.
type counters [numCounters]atomic.Uint64

func (c *counters) inc(i counter) { c[i].Add(1) }

func (c *counters) snapshot() Counters {
	return Counters{
		FeaturesRefused:      c[cFeaturesRefused].Load(),
		FeatureWritesIgnored: c[cFeatureWritesIgnored].Load(),
		StatusWritesIgnored:  c[cStatusWritesIgnored].Load(),
		DeviceFailures:       c[cDeviceFailures].Load(),
		Resets:               c[cResets].Load(),
	}
}
