package corraltest

import (
	"context"
	"log/slog"
	"strings"
)

// corral.New's own log calls mark the creation of a machine: it derives its
// logger with the attribute "vm" before it opens anything, and logs
// "vm.created" when everything is open. The leak check watches for both
// (TestNewLogsAroundCreation keeps corral.New to this).
const (
	vmAttr     = "vm"
	createdMsg = "vm.created"
)

// watchHandler is the machine's slog handler: it drives the leak check,
// passes records on to the caller's logger, and without one logs warnings
// and errors (guest faults, failed devices) to the test.
type watchHandler struct {
	next    slog.Handler // the caller's, or nil
	check   *leakCheck
	console *console // for logging to the test
	attrs   []slog.Attr
}

func newWatchLogger(user *slog.Logger, check *leakCheck, c *console) *slog.Logger {
	h := &watchHandler{check: check, console: c}
	if user != nil {
		h.next = user.Handler()
	}
	return slog.New(h)
}

// Enabled lets every Info record through, as vm.created is one.
func (h *watchHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= slog.LevelInfo || h.next != nil && h.next.Enabled(ctx, l)
}

func (h *watchHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == createdMsg {
		h.check.created()
	}
	if h.next != nil {
		if h.next.Enabled(ctx, r.Level) {
			return h.next.Handle(ctx, r)
		}
		return nil
	}
	if r.Level >= slog.LevelWarn {
		var b strings.Builder
		b.WriteString("corral: " + r.Level.String() + " " + r.Message)
		add := func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true }
		for _, a := range h.attrs {
			add(a)
		}
		r.Attrs(add)
		h.console.logf("%s", b.String())
	}
	return nil
}

func (h *watchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	for _, a := range attrs {
		if a.Key == vmAttr {
			h.check.begin()
		}
	}
	h2 := *h
	h2.attrs = append(append([]slog.Attr(nil), h.attrs...), attrs...)
	if h.next != nil {
		h2.next = h.next.WithAttrs(attrs)
	}
	return &h2
}

func (h *watchHandler) WithGroup(name string) slog.Handler {
	h2 := *h
	if h.next != nil {
		h2.next = h.next.WithGroup(name)
	}
	return &h2
}
