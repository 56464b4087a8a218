package agentvm

import (
	"context"
	"log/slog"
	"time"
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
