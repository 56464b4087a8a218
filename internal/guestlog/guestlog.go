// Package guestlog logs faults that a guest can cause at will (bad BAR
// placements, refused feature sets, malformed requests) without letting it
// flood the host's log: the first record of each kind is logged, then at
// most one per Interval, each saying how many were suppressed since the
// previous one. Devices count every fault in their counters; the log is
// only a hint of what the counters say.
//
// A record's kind is its message, so messages must be constant strings: put
// what varies in the attributes. The level is checked before anything else,
// and attributes are handed to slog unformatted (use Hex rather than
// fmt.Sprintf), so a disabled level costs a call and nothing more.
package guestlog

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Interval is the least time between two records of one kind.
const Interval = time.Second

// maxKinds bounds the table of kinds. Messages are constants, so a device
// has a handful; past the bound, new kinds share one slot.
const maxKinds = 64

// overflowKind is the slot shared by kinds past maxKinds.
const overflowKind = "\x00overflow"

// Logger is a rate-limited slog.Logger. It is safe for concurrent use; the
// zero value is not usable, call New.
type Logger struct {
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	kinds map[string]*kind
}

// kind is the state of one message.
type kind struct {
	last       time.Time // when it was last logged
	suppressed uint64    // records dropped since then
}

// New returns a Logger writing to log (nil discards) and reading the time
// from now (nil means time.Now; tests give a fake clock).
func New(log *slog.Logger, now func() time.Time) *Logger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	return &Logger{log: log, now: now, kinds: make(map[string]*kind)}
}

// Enabled reports whether records at level would be logged at all (before
// rate limiting). Callers that must compute an attribute can check it first.
func (l *Logger) Enabled(level slog.Level) bool {
	return l.log.Enabled(context.Background(), level)
}

// Log logs msg at level with args (as slog.Logger.Log) unless a record with
// the same msg was logged less than Interval ago. A logged record that
// follows suppressed ones carries "suppressed", their number.
func (l *Logger) Log(level slog.Level, msg string, args ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	n, ok := l.admit(msg)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args[:len(args):len(args)], "suppressed", n)
	}
	l.log.Log(ctx, level, msg, args...)
}

// admit decides whether a record of kind msg is logged now, and returns how
// many of its kind were suppressed since the last one.
func (l *Logger) admit(msg string) (uint64, bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	k := l.kinds[msg]
	if k == nil {
		if len(l.kinds) >= maxKinds-1 {
			msg = overflowKind
			k = l.kinds[msg]
		}
		if k == nil {
			l.kinds[msg] = &kind{last: now}
			return 0, true
		}
	}
	if now.Sub(k.last) < Interval {
		k.suppressed++
		return 0, false
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return n, true
}

// Debug logs at slog.LevelDebug, rate limited.
func (l *Logger) Debug(msg string, args ...any) { l.Log(slog.LevelDebug, msg, args...) }

// Info logs at slog.LevelInfo, rate limited.
func (l *Logger) Info(msg string, args ...any) { l.Log(slog.LevelInfo, msg, args...) }

// Warn logs at slog.LevelWarn, rate limited.
func (l *Logger) Warn(msg string, args ...any) { l.Log(slog.LevelWarn, msg, args...) }

// Error logs at slog.LevelError, rate limited.
func (l *Logger) Error(msg string, args ...any) { l.Log(slog.LevelError, msg, args...) }

// Hex is an attribute value logged as 0x-prefixed hexadecimal; it is
// formatted only when a handler writes the record.
type Hex uint64

// LogValue implements slog.LogValuer.
func (h Hex) LogValue() slog.Value { return slog.StringValue(fmt.Sprintf("%#x", uint64(h))) }
