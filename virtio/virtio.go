// Package virtio holds what virtio devices and transports share: feature
// and status bits, device types, and the Device interface a transport (such
// as virtio/virtiopci) drives. The split virtqueue is in virtio/queue, devices in
// virtio/blk and friends.
//
// Life of a device under a transport:
//
//	Features/ReadConfig  while the driver negotiates
//	Activate             at DRIVER_OK, with the negotiated features and the
//	                     queues the driver set up; the device starts workers
//	Notify(q)            for every driver kick of queue q (from vCPU threads
//	                     or an ioeventfd reader); never blocks; a KickWaiter
//	                     reads its queues' ioeventfds itself instead
//	Interrupt.Signal(q)  called by the device when queue q's driver wants an
//	                     interrupt
//	Activation.Fail(err) called by the device when the guest broke the
//	                     protocol; the transport sets DEVICE_NEEDS_RESET
//	Reset                when the driver writes status 0; stops the workers
//	Close                when the VM stops
//
// For snapshots a device is also a Pauser (Pause stops its workers once
// every chain they took is back in the used ring, Resume restarts them;
// kicks meanwhile are served after Resume) and may be Stateful (its own
// state beyond the queues, for the transport's SaveState).
//
// Common does the part of Activate, Reset, Close, Pause and Resume that
// every device shares (checking the activation, tracking the active and
// paused states); a device gives it only its own start and stop steps.
package virtio

import (
	"context"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Device status bits (Virtio 1.2 §2.1).
const (
	StatusAcknowledge      = 1
	StatusDriver           = 2
	StatusDriverOK         = 4
	StatusFeaturesOK       = 8
	StatusDeviceNeedsReset = 0x40
	StatusFailed           = 0x80
)

// Device-independent feature bits (Virtio 1.2 §6).
const (
	FIndirectDesc = 1 << 28 // VIRTIO_F_INDIRECT_DESC
	FEventIdx     = 1 << 29 // VIRTIO_F_EVENT_IDX
	FVersion1     = 1 << 32 // VIRTIO_F_VERSION_1
	FAccessPlat   = 1 << 33 // VIRTIO_F_ACCESS_PLATFORM
	FRingPacked   = 1 << 34 // VIRTIO_F_RING_PACKED
)

// DeviceType is a virtio device ID (Virtio 1.2 §5).
type DeviceType uint16

// Device types this project implements.
const (
	TypeNet   DeviceType = 1
	TypeBlock DeviceType = 2
	TypeVsock DeviceType = 19
	TypeP9    DeviceType = 9 // virtio-9p: a 9P2000.L file system share
)

// Interrupt raises a queue's used-buffer interrupt in the guest. The
// transport implements it (MSI-X vector or INTx + ISR bit).
type Interrupt interface {
	Signal(queue int) error
}

// Activation is what a device needs to run: given at DRIVER_OK.
type Activation struct {
	Mem *guestmem.Memory
	// Features are the negotiated feature bits.
	Features uint64
	// Queues has one entry per device queue; nil for a queue the driver did
	// not enable. Each queue belongs to the device until Reset returns.
	Queues []*queue.Queue
	// Interrupt signals used buffers to the driver.
	Interrupt Interrupt
	// Fail is called (from any goroutine, possibly more than once) when the
	// guest broke the protocol on a queue; the transport sets
	// DEVICE_NEEDS_RESET and raises a configuration-change interrupt. May be
	// nil.
	Fail func(err error)
	// Paused activates the device without starting its workers: nothing
	// touches the queues until Resume (a transport restoring a snapshot).
	Paused bool
}

// QueueOptions returns the queue options that the negotiated features imply
// for a device offering queues of at most maxSize entries.
func QueueOptions(features uint64, maxSize uint16) queue.Options {
	return queue.Options{
		MaxSize:      maxSize,
		EventIdx:     features&FEventIdx != 0,
		IndirectDesc: features&FIndirectDesc != 0,
	}
}

// Device is a virtio device model, independent of the transport.
type Device interface {
	// Type returns the virtio device ID.
	Type() DeviceType
	// Features returns the feature bits the device offers.
	Features() uint64
	// NumQueues returns how many virtqueues the device has.
	NumQueues() int
	// MaxQueueSize returns the largest size the device accepts for a queue.
	MaxQueueSize() uint16
	// ConfigSize returns the size of the device-specific configuration.
	ConfigSize() int
	// ReadConfig copies device configuration bytes at off into p; bytes
	// past the end read as zero.
	ReadConfig(off int, p []byte)
	// WriteConfig stores driver writes to device configuration; writes to
	// read-only fields are ignored.
	WriteConfig(off int, p []byte)
	// Activate starts the device with negotiated features and queues. ctx
	// bounds the workers' lives (Reset and Close also stop them).
	Activate(ctx context.Context, a Activation) error
	// Notify tells the device the driver kicked queue q. It never blocks.
	Notify(q int)
	// Reset stops the device's workers and forgets the queues; the device
	// can be activated again. Completed requests are durable when it returns.
	Reset() error
	// Close resets the device and releases its backend.
	Close() error
}

// KickWaiter is a Device whose queue workers wait on the queues' kick
// eventfds themselves: the VMM binds each to the queue's notify register
// (KVM_IOEVENTFD), so a guest kick wakes the thread that serves the queue
// with no goroutine in between. A transport that binds ioeventfds offers
// each queue's eventfd once (before the device is activated, or while it is
// reset); a device that takes it waits on it from its next activation on and
// the transport starts no reader for that queue. Notify still works for
// every queue (kicks that exit to the VMM: no binder, a failed bind, a BAR
// that does not decode).
type KickWaiter interface {
	// TakeKick offers queue q's kick eventfd: a blocking eventfd (no
	// O_NONBLOCK) that KVM signals. It returns false when the device does
	// not take it (it is active, closed, or already has one for q); the
	// transport then reads fd itself and calls Notify. A taken fd stays
	// open and bound until the device's Close has returned: the transport
	// closes it after that, and the device never does.
	TakeKick(q int, fd int) bool
}

// Pauser is a device whose workers can be stopped and restarted without
// losing the device's state, for snapshots.
type Pauser interface {
	// Pause stops the workers after the chains they took are completed
	// in the used ring: afterwards no device goroutine touches guest
	// memory or the queues, completed writes are durable, and host input
	// is held, not dropped. Kicks (Notify) meanwhile are served after
	// Resume. A no-op when the device is inactive or already paused.
	Pause() error
	// Resume restarts what Pause stopped (or starts a device activated
	// with Activation.Paused). A no-op when the device is not paused.
	Resume() error
}

// Stateful is a device with state of its own beyond its queues and
// configuration (a NIC's DHCP leases), saved in snapshots. The encoding is
// the device's, versioned; RestoreState rejects anything it did not write
// with an error naming what is wrong. The transport calls SaveState only
// while the device is paused and RestoreState on a fresh device before it
// is resumed.
type Stateful interface {
	SaveState() ([]byte, error)
	RestoreState(data []byte) error
}

// CopyConfig serves a driver's read of device configuration: it copies
// config[off:] into p and zero-fills what lies past the end (or all of p
// for an offset outside config).
func CopyConfig(p []byte, config []byte, off int) {
	clear(p)
	if off >= 0 && off < len(config) {
		copy(p, config[off:])
	}
}
