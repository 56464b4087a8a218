package corral

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a ttlClock whose wall and boot-time readings the test sets
// independently.
type fakeClock struct {
	mu      sync.Mutex
	wall    time.Time
	boot    time.Duration
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Duration
	ch chan time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wall
}

func (c *fakeClock) Boottime() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boot
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, fakeWaiter{c.boot + d, ch})
	return ch
}

// set moves the clock: boot time to boot, the wall clock to wall (any
// direction), and fires the timers that are due.
func (c *fakeClock) set(boot time.Duration, wall time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.boot, c.wall = boot, wall
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at <= boot {
			w.ch <- wall
		} else {
			kept = append(kept, w)
		}
	}
	c.waiters = kept
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// TestTTLIgnoresTheCalendar: a TTL expires after exactly its length of
// boot time, whatever the wall clock does: starting at the 32-bit time_t
// rollover, jumping past 2106-02-07 (the unsigned 32-bit rollover), and
// stepped back decades.
func TestTTLIgnoresTheCalendar(t *testing.T) {
	y2038 := time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC)
	y2106 := time.Date(2106, 2, 7, 6, 28, 17, 0, time.UTC)
	back := time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	const start = 5 * time.Hour // boot time when the machine started
	clk := &fakeClock{wall: y2038, boot: start}
	expired := make(chan time.Duration, 1)
	stop := make(chan struct{})
	defer close(stop)
	go watchTTL(clk, start, 10*time.Second, stop, func() { expired <- clk.Boottime() })

	notYet := func(what string) {
		t.Helper()
		// The watcher is waiting on its timer again (or never stopped).
		deadline := time.Now().Add(5 * time.Second)
		for clk.pending() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		select {
		case at := <-expired:
			t.Fatalf("%s: expired at boot time %v, before the TTL", what, at)
		case <-time.After(20 * time.Millisecond):
		}
	}
	notYet("at start, 2038")
	clk.set(start+3*time.Second, y2106.Add(time.Hour)) // the wall clock leaps 68 years
	notYet("wall clock past 2106")
	clk.set(start+9*time.Second, back) // ...and is stepped back to 1970
	notYet("wall clock stepped back")
	clk.set(start+9999*time.Millisecond, y2038.Add(-time.Hour))
	notYet("1 ms before the TTL")
	clk.set(start+10*time.Second, back)
	select {
	case at := <-expired:
		if at != start+10*time.Second {
			t.Errorf("expired at boot time %v, want %v", at, start+10*time.Second)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not expired when the TTL had passed")
	}
}

func TestTTLStopEndsTheWatch(t *testing.T) {
	clk := &fakeClock{boot: 0}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		watchTTL(clk, 0, time.Hour, stop, func() { t.Error("expired after stop") })
		close(done)
	}()
	close(stop)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("watchTTL did not return on stop")
	}
}

func TestTTLLeft(t *testing.T) {
	for _, tc := range []struct{ start, now, ttl, want time.Duration }{
		{0, 0, time.Minute, time.Minute},
		{time.Hour, time.Hour + 20*time.Second, time.Minute, 40 * time.Second},
		{time.Hour, time.Hour + time.Minute, time.Minute, 0},
		{time.Hour, 2 * time.Hour, time.Minute, -59 * time.Minute},
	} {
		if got := ttlLeft(tc.start, tc.now, tc.ttl); got != tc.want {
			t.Errorf("ttlLeft(%v, %v, %v) = %v, want %v", tc.start, tc.now, tc.ttl, got, tc.want)
		}
	}
}
