package corral

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/corral-vmm/corral/inventory"
)

// TTLStopTimeout is how long a machine past its TTL has to power off after
// the request before it is stopped hard.
const TTLStopTimeout = 10 * time.Second

// ttlClock is the TTL's time source. Only Boottime (CLOCK_BOOTTIME:
// monotonic, counting suspend, what the inventory ages machines by) enters
// decisions; the wall clock only labels audit records, so no calendar
// date, however far out or stepped back, changes when a machine expires.
type ttlClock interface {
	inventory.Clock
	After(d time.Duration) <-chan time.Time
}

type systemTTLClock struct{ inventory.SystemClock }

func (systemTTLClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// ttlLeft is how much of ttl is left at boot time now for a machine that
// started at boot time start (0 or less: expired).
func ttlLeft(start, now, ttl time.Duration) time.Duration {
	return ttl - (now - start)
}

// watchTTL waits until ttl has passed since start on clk's boot-time
// clock and calls expire, or returns when stop is closed first.
func watchTTL(clk ttlClock, start, ttl time.Duration, stop <-chan struct{}, expire func()) {
	for {
		left := ttlLeft(start, clk.Boottime(), ttl)
		if left <= 0 {
			expire()
			return
		}
		select {
		case <-clk.After(left):
		case <-stop:
			return
		}
	}
}

// startTTL watches Config.TTL from the machine's start (its inventory
// record's boot time when registered).
func (m *Machine) startTTL(clk ttlClock) {
	ttl := m.cfg.TTL
	if ttl <= 0 {
		return
	}
	start := clk.Boottime()
	if rec, ok := m.InventoryRecord(); ok {
		start = time.Duration(rec.Started)
	}
	go watchTTL(clk, start, ttl, m.done, func() { m.expire(clk) })
}

// expire audits vm.expired, then shuts the machine down: a power-off
// request, and a hard stop TTLStopTimeout later.
func (m *Machine) expire(clk ttlClock) {
	if err := m.Audit("vm.expired", slog.String("ttl", m.cfg.TTL.String()), slog.String("stop_timeout", TTLStopTimeout.String())); err != nil {
		m.log.Error("vm.expired: audit", "err", err)
	}
	m.log.Info("vm.expired", "id", m.id, "ttl", m.cfg.TTL, "wall", clk.Now())
	ctx := WithRequester(context.Background(), Requester{UID: os.Getuid(), PID: os.Getpid(), Via: "ttl"})
	_ = m.Shutdown(ctx, TTLStopTimeout) // ErrEnded: it ended by itself meanwhile
}
