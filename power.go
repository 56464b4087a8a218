package corral

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// ErrEnded is returned by RequestPowerOff on a machine that has ended.
var ErrEnded = errors.New("corral: machine has ended")

// RequestPowerOff asks the guest to shut down and returns at once: it
// types Ctrl-Alt-Del on the i8042 keyboard, as Firecracker's
// SendCtrlAltDel does. That is what a Linux guest honours by default with
// no user-space help: its keyboard driver (CONFIG_VT, CONFIG_SERIO_I8042,
// CONFIG_KEYBOARD_ATKBD) calls ctrl_alt_del(), and the kernel restarts at
// once, or, when init took the keys over (systemd does), init gets SIGINT
// and shuts down in order. Either way the guest's reboot ends a Corral
// machine (ExitReset). An ACPI power button would need a GED device in
// this hardware-reduced ACPI machine and a user-space daemon (logind,
// acpid) to act on the KEY_POWER it reports, so it is not offered.
//
// A guest without a keyboard driver, or one that ignores the keys, runs
// on: Shutdown stops such a guest after its timeout.
func (m *Machine) RequestPowerOff() error {
	m.mu.Lock()
	started, ended := m.started, m.exit != nil
	m.mu.Unlock()
	switch {
	case !started:
		return ErrNotStarted
	case ended:
		return ErrEnded
	}
	if err := m.plat.kbd.CtrlAltDel(); err != nil {
		return fmt.Errorf("corral: power-off request: %w", err)
	}
	return nil
}

// Requester says who asked for a machine to stop, for the audit trail.
type Requester struct {
	UID int    // -1 when unknown
	PID int    // 0 when unknown
	Via string // "api", "control socket", "ttl", ...
}

type requesterKey struct{}

// WithRequester returns a context that tells Shutdown and Kill who asked.
// Without it they record this process (via "api").
func WithRequester(ctx context.Context, r Requester) context.Context {
	return context.WithValue(ctx, requesterKey{}, r)
}

func requesterOf(ctx context.Context) Requester {
	if r, ok := ctx.Value(requesterKey{}).(Requester); ok {
		return r
	}
	return Requester{UID: os.Getuid(), PID: os.Getpid(), Via: "api"}
}

func (r Requester) String() string {
	return fmt.Sprintf("uid %d pid %d via %s", r.UID, r.PID, r.Via)
}

func (r Requester) attr() slog.Attr {
	return slog.Group("by", slog.Int("uid", r.UID), slog.Int("pid", r.PID), slog.String("via", r.Via))
}

// Shutdown stops the machine gracefully: it audits vm.stopping with who
// asked (WithRequester), asks the guest to power off (RequestPowerOff),
// waits up to timeout for it to end, then stops it hard; the exit's Detail
// then says the guest did not answer in time. It returns once the machine
// has ended (Wait tells how: ExitStopped means it had to be stopped hard);
// ctx only bounds the wait (the machine keeps stopping when ctx ends
// first). A machine that has already ended gives ErrEnded.
func (m *Machine) Shutdown(ctx context.Context, timeout time.Duration) error {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	who := requesterOf(ctx)
	select {
	case <-m.done:
		return ErrEnded
	default:
	}
	if err := m.Audit("vm.stopping", who.attr(), slog.String("timeout", timeout.String()), slog.String("how", "power-off request")); err != nil {
		m.log.Error("vm.stopping: audit", "err", err)
	}
	m.log.Info("vm.stopping", "id", m.id, "by", who.String(), "timeout", timeout)
	if err := m.RequestPowerOff(); err != nil && !errors.Is(err, ErrEnded) {
		// A guest that cannot take the keys (its buffer is full) is stopped
		// after the timeout all the same.
		m.log.Warn("vm.stopping: power-off request", "err", err)
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-m.done:
	case <-t.C:
		m.end(Exit{Reason: ExitStopped, Detail: fmt.Sprintf("the guest did not power off within %s of the request (%s)", timeout, who)})
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Kill stops the machine hard, auditing vm.stopping with who asked
// (WithRequester), and returns once it has ended or ctx is done.
func (m *Machine) Kill(ctx context.Context) error {
	m.mu.Lock()
	started := m.started
	m.mu.Unlock()
	if !started {
		return ErrNotStarted
	}
	who := requesterOf(ctx)
	select {
	case <-m.done:
		return ErrEnded
	default:
	}
	if err := m.Audit("vm.stopping", who.attr(), slog.String("how", "kill")); err != nil {
		m.log.Error("vm.stopping: audit", "err", err)
	}
	m.end(Exit{Reason: ExitStopped, Detail: "killed (" + who.String() + ")"})
	select {
	case <-m.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
