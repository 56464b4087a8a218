package corral

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/corral-vmm/corral/kvm"
)

// ErrNotPaused is returned by Snapshot on a machine that is running.
// (Pause and Resume return ErrEnded on a machine that has ended or is
// ending.)
var ErrNotPaused = errors.New("corral: machine not paused")

// pauseState parks the vCPUs. A vCPU goroutine that sees want set at the
// top of its loop completes the exit it was in (KVM_RUN with
// immediate_exit), counts itself parked and waits until want is cleared or
// the machine stops.
type pauseState struct {
	op sync.Mutex // serializes Pause, Resume and Snapshot; never held by vCPUs

	want   atomic.Bool // Pause asked for the vCPUs to park; read by every run loop iteration
	mu     sync.Mutex
	cond   *sync.Cond
	parked int  // vCPUs parked now
	paused bool // every vCPU parked and every device paused
	errs   []error
}

func (p *pauseState) init() { p.cond = sync.NewCond(&p.mu) }

// wake releases parked vCPUs so they see the machine stopping.
func (p *pauseState) wake() {
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// park holds a vCPU goroutine while a pause is wanted. The pending exit is
// completed first, so the registers KVM hands a snapshot include the data
// of the last port or MMIO read.
func (m *Machine) park(v *kvm.VCPU) {
	err := v.CompletePendingIO()
	p := &m.pause
	p.mu.Lock()
	if err != nil {
		p.errs = append(p.errs, err)
	}
	p.parked++
	p.cond.Broadcast()
	for p.want.Load() && !m.stopping.Load() {
		p.cond.Wait()
	}
	p.parked--
	p.cond.Broadcast()
	p.mu.Unlock()
	v.ClearKick()
}

// Pause stops the machine where it is: every vCPU out of KVM_RUN with its
// pending I/O exit completed, and every device's workers stopped with their
// in-flight requests finished. The guest's clock keeps running. Pause
// returns when that is done, when ctx is done (the machine then runs on),
// or when the machine ends. Pausing a paused machine does nothing.
func (m *Machine) Pause(ctx context.Context) error {
	p := &m.pause
	p.op.Lock()
	defer p.op.Unlock()
	if err := m.runningErr(); err != nil {
		return err
	}
	p.mu.Lock()
	if p.paused {
		p.mu.Unlock()
		return nil
	}
	p.want.Store(true)
	p.errs = nil
	p.mu.Unlock()
	for _, v := range m.vcpus {
		v.Kick()
	}
	// Wait for the vCPUs, waking on ctx too: a goroutine turns its end
	// into a broadcast.
	stop := context.AfterFunc(ctx, p.wake)
	p.mu.Lock()
	for p.parked < len(m.vcpus) && ctx.Err() == nil && !m.stopping.Load() {
		p.cond.Wait()
	}
	parked := p.parked == len(m.vcpus)
	errs := p.errs
	p.mu.Unlock()
	stop()
	fail := func(err error) error {
		m.releaseVCPUs()
		return err
	}
	switch {
	case m.stopping.Load():
		return fail(ErrEnded)
	case !parked:
		return fail(fmt.Errorf("corral: pause: %w", context.Cause(ctx)))
	case len(errs) > 0:
		return fail(fmt.Errorf("corral: pause: completing the vCPUs' last exits: %w", errors.Join(errs...)))
	}
	if err := m.plat.pauseDevices(); err != nil {
		_ = m.plat.resumeDevices()
		return fail(fmt.Errorf("corral: pause: %w", err))
	}
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	m.log.Info("vm.paused", "id", m.id)
	m.auditEvent("vm.paused")
	return nil
}

// Resume lets a paused machine run on. Resuming a running machine does
// nothing.
func (m *Machine) Resume() error {
	p := &m.pause
	p.op.Lock()
	defer p.op.Unlock()
	if err := m.runningErr(); err != nil {
		return err
	}
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if !paused {
		return nil
	}
	if err := m.plat.resumeDevices(); err != nil {
		return fmt.Errorf("corral: resume: %w", err)
	}
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	m.releaseVCPUs()
	m.log.Info("vm.resumed", "id", m.id)
	m.auditEvent("vm.resumed")
	return nil
}

// Paused reports whether the machine is paused.
func (m *Machine) Paused() bool {
	m.pause.mu.Lock()
	defer m.pause.mu.Unlock()
	return m.pause.paused
}

// runningErr says why the machine cannot be paused or resumed, if it
// cannot.
func (m *Machine) runningErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case !m.started:
		return ErrNotStarted
	case m.exit != nil || m.stopping.Load():
		return ErrEnded
	}
	return nil
}

// releaseVCPUs lets parked vCPUs run again.
func (m *Machine) releaseVCPUs() {
	p := &m.pause
	p.mu.Lock()
	p.want.Store(false)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// auditEvent records a lifecycle event of a registered machine; failures
// are logged, not returned: the event happened either way.
func (m *Machine) auditEvent(event string, attrs ...slog.Attr) {
	if m.reg.Load() == nil {
		return
	}
	if err := m.Audit(event, attrs...); err != nil {
		m.log.Warn("audit", "event", event, "err", err)
	}
}

// pauseDevices stops every virtio device's workers after their in-flight
// requests; on an error the devices paused so far stay paused (the caller
// resumes them).
func (p *platform) pauseDevices() error {
	for i, t := range p.transports {
		if err := t.Pause(); err != nil {
			return fmt.Errorf("pausing PCI slot %d: %w", i+1, err)
		}
	}
	return nil
}

// resumeDevices restarts every virtio device's workers.
func (p *platform) resumeDevices() error {
	var errs []error
	for i, t := range p.transports {
		if err := t.Resume(); err != nil {
			errs = append(errs, fmt.Errorf("resuming PCI slot %d: %w", i+1, err))
		}
	}
	return errors.Join(errs...)
}
