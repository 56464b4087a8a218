package agentvm

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/corral-vmm/corral"
)

// Steps logs, at debug level, how long each step of a start or a close
// took and the time since the first: where a warm exec's time goes
// (bench/results' warm-exec figures were read from these lines).
type Steps struct {
	log   *slog.Logger
	what  string
	start time.Time
	last  time.Time
}

// NewSteps starts timing what ("warm", "exec", ...) on log; nil discards.
func NewSteps(log *slog.Logger, what string) *Steps {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	return &Steps{log: log, what: what, start: now, last: now}
}

// Step logs that step is done: how long since the previous step, and
// since the start.
func (s *Steps) Step(step string) {
	if s == nil || !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	now := time.Now()
	s.log.Debug(s.what+": "+step, "step", now.Sub(s.last).Round(time.Microsecond), "total", now.Sub(s.start).Round(time.Microsecond))
	s.last = now
}

// logCounters logs, at debug level, what the machine's devices did: the
// 9P requests per share and the vCPU exits by reason, so a step's time
// can be put down to guest traffic.
func logCounters(log *slog.Logger, m *corral.Machine) {
	if m == nil || log == nil || !log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	var attrs []any
	for _, mt := range m.Metrics() {
		if mt.Name != "corral_9p_requests_total" && mt.Name != "corral_vcpu_exits_total" && mt.Name != "corral_vsock_dial_refused_total" && mt.Name != "corral_vsock_dialed_total" {
			continue
		}
		for _, s := range mt.Samples {
			key := strings.TrimSuffix(strings.TrimPrefix(mt.Name, "corral_"), "_total")
			for _, l := range []string{"share", "reason"} {
				if v, ok := s.Labels[l]; ok {
					key += "." + v
				}
			}
			attrs = append(attrs, key, uint64(s.Value))
		}
	}
	log.Debug("agentvm: machine counters", attrs...)
}
