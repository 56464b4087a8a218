package virtio

import (
	"errors"
	"fmt"
	"sync"
)

// Errors from Common.Activate, for callers (and tests) that branch.
var (
	// ErrBadActivation wraps every reason an Activation does not fit the
	// device: missing memory or interrupt, the wrong number of queues, a
	// queue larger than offered, features not offered, no VERSION_1.
	ErrBadActivation = errors.New("activation does not fit the device")
	// ErrActive is returned when the device is activated twice without a
	// Reset in between.
	ErrActive = errors.New("device is already active")
	// ErrClosed is returned when a closed device is activated.
	ErrClosed = errors.New("device is closed")
)

// Common is what every virtio device does on activation and reset, in one
// place (as Cloud Hypervisor's VirtioCommon): it checks an Activation
// against what the device offers, keeps it while the device runs, tracks
// whether the device is active or closed, and serialises Activate, Reset
// and Close. The device supplies only its own start and stop steps. It is
// safe for concurrent use; build it with NewCommon.
type Common struct {
	name      string
	features  uint64
	numQueues int
	maxSize   uint16

	mu     sync.Mutex
	active bool
	closed bool
	paused bool
	act    Activation
	// deferred is the start of a device activated paused (Activation.Paused):
	// Resume runs it instead of the device's resume step.
	deferred func(Activation) error
}

// NewCommon returns the activation state of a device called name (it
// prefixes errors: "virtio-blk") offering features, with numQueues queues of
// at most maxQueueSize entries.
func NewCommon(name string, features uint64, numQueues int, maxQueueSize uint16) *Common {
	return &Common{name: name, features: features, numQueues: numQueues, maxSize: maxQueueSize}
}

// check reports why a does not fit the device, or nil.
func (c *Common) check(a Activation) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%s: %w: %s", c.name, ErrBadActivation, fmt.Sprintf(format, args...))
	}
	if a.Mem == nil || a.Interrupt == nil {
		return bad("no guest memory or interrupt")
	}
	if len(a.Queues) != c.numQueues {
		return bad("%d queues; the device has %d", len(a.Queues), c.numQueues)
	}
	for i, q := range a.Queues {
		if q != nil && q.Size() > c.maxSize {
			return bad("queue %d has %d entries; the device offers at most %d", i, q.Size(), c.maxSize)
		}
	}
	if extra := a.Features &^ c.features; extra != 0 {
		return bad("features %#x not offered", extra)
	}
	if a.Features&FVersion1 == 0 {
		return bad("VIRTIO_F_VERSION_1 not accepted (legacy devices are not supported)")
	}
	return nil
}

// Activate checks a and calls start with it, holding the lock that also
// serialises Reset and Close. The device is active, and keeps a, when start
// returns nil. With a.Paused start is not called yet: the device is active
// and paused, and the first Resume calls start.
func (c *Common) Activate(a Activation, start func(Activation) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("%s: activate: %w", c.name, ErrClosed)
	}
	if c.active {
		return fmt.Errorf("%s: activate: %w", c.name, ErrActive)
	}
	if err := c.check(a); err != nil {
		return err
	}
	if a.Paused {
		c.active, c.paused, c.act, c.deferred = true, true, a, start
		return nil
	}
	if err := start(a); err != nil {
		return err
	}
	c.active, c.act = true, a
	return nil
}

// Pause calls pause if the device is active and not paused, and marks it
// paused whatever pause returns (pause must leave the workers stopped even
// when it fails, e.g. a final sync). pause is the device's step that stops
// its workers but keeps its state and queues.
func (c *Common) Pause(pause func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active || c.paused {
		return nil
	}
	c.paused = true
	return pause()
}

// Resume calls resume if the device is paused (or, for a device activated
// paused, the start step Activate was given), and marks it running when
// that returns nil.
func (c *Common) Resume(resume func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active || !c.paused {
		return nil
	}
	var err error
	if c.deferred != nil {
		a := c.act
		a.Paused = false
		err = c.deferred(a)
		if err == nil {
			c.deferred = nil
		}
	} else {
		err = resume()
	}
	if err != nil {
		return err
	}
	c.paused = false
	return nil
}

// Paused reports whether the device is active and paused.
func (c *Common) Paused() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active && c.paused
}

// Reset calls stop if the device is active and forgets the activation; the
// device can then be activated again. It returns stop's error; the device
// is inactive whatever stop says. stop is called for a paused device too,
// whose workers Pause already stopped (or never started).
func (c *Common) Reset(stop func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.resetLocked(stop)
}

func (c *Common) resetLocked(stop func() error) error {
	if !c.active {
		return nil
	}
	c.active, c.paused, c.act, c.deferred = false, false, Activation{}, nil
	return stop()
}

// Close resets the device (stop) and then releases its backend (release),
// once: later calls return nil and Activate fails with ErrClosed.
func (c *Common) Close(stop, release func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return errors.Join(c.resetLocked(stop), release())
}

// Active reports whether the device is activated.
func (c *Common) Active() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active
}

// Activation returns the activation the device runs with, and whether it
// is active.
func (c *Common) Activation() (Activation, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.act, c.active
}
