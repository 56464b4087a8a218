// Package guestlogtest has what tests of guest-fault logging share: a
// slog.Handler that counts the warnings a device writes.
package guestlogtest

import (
	"context"
	"log/slog"
	"sync"
)

// Warnings is a slog.Handler that counts records at Warn and above, in all
// and by message. It is safe for concurrent use; the zero value is ready.
type Warnings struct {
	mu    sync.Mutex
	n     int
	byMsg map[string]int
}

// Enabled reports true for every level, so a logger over it formats what
// a real debug logger would.
func (h *Warnings) Enabled(context.Context, slog.Level) bool { return true }

// Handle counts r when it is a warning or an error.
func (h *Warnings) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	if h.byMsg == nil {
		h.byMsg = map[string]int{}
	}
	h.byMsg[r.Message]++
	return nil
}

// WithAttrs returns h: attributes do not change the counts.
func (h *Warnings) WithAttrs([]slog.Attr) slog.Handler { return h }

// WithGroup returns h.
func (h *Warnings) WithGroup(string) slog.Handler { return h }

// Count returns how many warnings and errors were logged.
func (h *Warnings) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// ByMessage returns a copy of the counts by message.
func (h *Warnings) ByMessage() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := make(map[string]int, len(h.byMsg))
	for k, v := range h.byMsg {
		m[k] = v
	}
	return m
}
