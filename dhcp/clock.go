package dhcp

import "time"

// Clock is the server's time source. Now returns a monotonic reading: time
// elapsed since an arbitrary origin fixed when the clock was made. The server
// only compares and adds readings, so the calendar date never matters; if a
// clock ever steps backwards the server holds its time at the latest reading.
type Clock interface {
	Now() time.Duration
}

// monotonicClock reads Go's monotonic clock relative to its creation.
type monotonicClock struct{ start time.Time }

// Now returns the monotonic time elapsed since the clock was made.
func (c monotonicClock) Now() time.Duration { return time.Since(c.start) }

// NewMonotonicClock returns a Clock backed by the process's monotonic clock,
// unaffected by changes to the host's wall clock.
func NewMonotonicClock() Clock { return monotonicClock{start: time.Now()} }

// maxDuration is the "never" deadline (infinite leases).
const maxDuration = time.Duration(1<<63 - 1)

// addSat returns t+d, saturating at maxDuration; d must be non-negative.
func addSat(t, d time.Duration) time.Duration {
	if d < 0 {
		return t
	}
	if t > maxDuration-d {
		return maxDuration
	}
	return t + d
}
