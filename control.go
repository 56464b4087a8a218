package corral

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/inventory"
)

// controlGrace bounds how long the control socket waits, once the machine
// has ended, for answers in flight (a stop request answers then).
const controlGrace = 2 * time.Second

// controlState is the machine's control socket server.
type controlState struct {
	srv    *control.Server
	closed chan struct{} // closed once the server has shut down
}

// ControlSocket returns the path of the machine's control socket, or ""
// when it has none (not registered in the inventory).
func (m *Machine) ControlSocket() string {
	if c := m.ctl.Load(); c != nil {
		return c.srv.Path()
	}
	return ""
}

// startControl serves the control socket in the machine's inventory
// directory until the machine has ended. A machine that is not registered
// has none. Failing to create it is logged, not fatal: the machine runs,
// and can still be stopped by its process.
func (m *Machine) startControl() {
	dir := m.InventoryDir()
	if dir == "" {
		return
	}
	srv, err := control.Listen(filepath.Join(dir, control.SocketName), control.Config{Target: controlTarget{m}, Owner: -1, Logger: m.log})
	if err != nil {
		m.log.Error("control socket", "err", err)
		return
	}
	c := &controlState{srv: srv, closed: make(chan struct{})}
	m.ctl.Store(c)
	go func() {
		<-m.done
		_ = srv.Close(controlGrace)
		close(c.closed)
	}()
}

// waitControl waits until the control socket has answered what was in
// flight and is gone (Close, after the machine ended).
func (m *Machine) waitControl() {
	if c := m.ctl.Load(); c != nil {
		<-c.closed
	}
}

// controlTarget is the machine as the control server sees it.
type controlTarget struct{ m *Machine }

func (t controlTarget) Info() control.Info {
	m := t.m
	info := control.Info{ID: m.id, Name: m.cfg.Name, CPUs: m.cfg.cpus(), Memory: m.cfg.memory(), Kernel: m.cfg.Kernel, Labels: m.cfg.Labels}
	if rec, ok := m.InventoryRecord(); ok {
		info.PID, info.UID, info.Kernel, info.Started = rec.PID, rec.UID, rec.Kernel, rec.Created
		if rec.TTL > 0 {
			info.TTL = time.Duration(rec.TTL).String()
			left := max(ttlLeft(time.Duration(rec.Started), inventory.SystemClock{}.Boottime(), time.Duration(rec.TTL)), 0)
			info.TTLLeft = left.Round(time.Second).String()
		}
	}
	m.mu.Lock()
	switch {
	case !m.started:
		info.State = "created"
	case m.exit == nil && m.Paused():
		info.State = "paused"
	case m.exit == nil:
		info.State = "running"
	default:
		info.State = "stopping"
	}
	m.mu.Unlock()
	select {
	case <-m.done:
		info.State, info.Exit, info.TTLLeft = "ended", m.final.String(), ""
	default:
	}
	return info
}

func (t controlTarget) ended() control.Ended {
	e := t.m.final // read after done is closed
	return control.Ended{Exit: e.String(), Graceful: e.Reason != ExitStopped && e.Reason != ExitError}
}

func peerRequester(p control.Peer) Requester {
	return Requester{UID: int(p.UID), PID: int(p.PID), Via: "control socket"}
}

func (t controlTarget) Shutdown(ctx context.Context, timeout time.Duration, by control.Peer) (control.Ended, error) {
	err := t.m.Shutdown(WithRequester(ctx, peerRequester(by)), timeout)
	if err != nil && err != ErrEnded {
		return control.Ended{}, err
	}
	return t.ended(), nil
}

func (t controlTarget) Kill(ctx context.Context, by control.Peer) (control.Ended, error) {
	err := t.m.Kill(WithRequester(ctx, peerRequester(by)))
	if err != nil && err != ErrEnded {
		return control.Ended{}, err
	}
	return t.ended(), nil
}

func (t controlTarget) Metrics() []control.Metric { return t.m.Metrics() }

func (t controlTarget) Pause(ctx context.Context, by control.Peer) error {
	return t.m.Pause(WithRequester(ctx, peerRequester(by)))
}

func (t controlTarget) Resume(by control.Peer) error { return t.m.Resume() }

// Snapshot pauses the machine if it runs, saves it, and resumes it when
// asked or when it was running before and the snapshot failed.
func (t controlTarget) Snapshot(ctx context.Context, dir string, resume bool, by control.Peer) error {
	m := t.m
	wasPaused := m.Paused()
	if err := m.Pause(WithRequester(ctx, peerRequester(by))); err != nil {
		return err
	}
	err := m.Snapshot(ctx, dir)
	if resume || (err != nil && !wasPaused) {
		if rerr := m.Resume(); rerr != nil {
			return errors.Join(err, rerr)
		}
	}
	return err
}
