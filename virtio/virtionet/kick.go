package virtionet

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/kickfd"
)

var _ virtio.KickWaiter = (*Device)(nil)

// queueKicks holds what each pair's transmit goroutine and receive loop
// sleep on: the queue's kick eventfd that the transport handed over
// (virtio.KickWaiter: KVM signals it on a guest kick) or one of the
// device's own, made at the first activation. Notify and the stop paths
// signal it; nothing on a per-frame host path does (the frame handler's
// replies go the other way, to the receive queue), so no host goroutine
// pays an eventfd write per frame.
//
// The transmitters park on the eventfds in the runtime's poller
// (kickfd.Polled), not in a blocking read as virtio-blk's workers do: with
// bursts of frames per kick the blocking read cost 8-13% more per frame
// (a thread asleep in read(2) holds a P that the runtime hands off), while
// the poller removes the transport's reader goroutine and channel as well
// (bench/results/2026-12-07-net-kick-loop.md). A receive loop on a
// PollQueue polls its eventfd beside the backend's descriptor.
//
// Transmit queues (odd, below 2N) are transmit queues whether or not the
// driver negotiates MQ. Of the receive queues, queue 2 is not taken: it is
// the control queue without MQ and receiveq2 with it, and the transport
// offers eventfds before the driver chooses.
type queueKicks struct {
	mu     sync.RWMutex
	fds    []*kickfd.FD     // one per queue pair
	polled []*kickfd.Polled // what the transmitters wait on: fds[i] through the runtime's poller
	rx     []*kickfd.FD     // one per queue pair on a PollQueue: what its receive loop polls beside the backend
	inUse  bool             // an activation's transmitters hold them: TakeKick refuses
	closed bool             // Close released them
}

// TakeKick implements virtio.KickWaiter for the transmit queues (odd q
// below 2 × max_virtqueue_pairs) and for the receive queues other than
// queue 2 on a backend whose receive loop polls (PollQueue): that queue's
// goroutine waits on fd from the next activation on. Refused for every
// other queue (the transport reads those and calls Notify), while the
// device is active, and after Close.
func (d *Device) TakeKick(q int, fd int) bool {
	k := &d.kicks
	k.mu.Lock()
	defer k.mu.Unlock()
	i := q / 2
	if k.closed || k.inUse || q < 0 || i >= len(k.fds) {
		return false
	}
	slot := &k.fds[i]
	if q%2 == 0 {
		if _, ok := d.queues[i].(PollQueue); !ok || q == 2 {
			return false
		}
		slot = &k.rx[i]
	}
	if *slot != nil && !(*slot).Own() {
		return false
	}
	fdk, err := kickfd.Adopt(fd)
	if err != nil {
		d.log.Error("virtio-net: kick eventfd; kicks go through Notify", "queue", q, "err", err)
		return false
	}
	if w := k.polled[i]; w != nil && q%2 == 1 {
		w.Close()
		k.polled[i] = nil
	}
	if old := *slot; old != nil {
		old.Close()
	}
	*slot = fdk
	return true
}

// hand gives each transmitter of r its pair's eventfd, making the device's
// own where the transport handed none over, and marks them in use.
func (k *queueKicks) hand(r *run) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, p := range r.pairs {
		if pq, ok := r.d.queues[i].(PollQueue); ok && p.rx != nil {
			if k.rx[i] == nil {
				fd, err := kickfd.New()
				if err != nil {
					return fmt.Errorf("virtio-net: receive queue %d: %w", 2*i, err)
				}
				k.rx[i] = fd
			}
			p.rx.wake = k.rx[i]
			p.rx.pfds = [2]unix.PollFd{{Fd: int32(pq.PollFD()), Events: unix.POLLIN}, {Fd: int32(k.rx[i].Int()), Events: unix.POLLIN}}
		}
		if p.tx == nil {
			continue
		}
		if k.fds[i] == nil {
			fd, err := kickfd.New()
			if err != nil {
				return fmt.Errorf("virtio-net: transmit queue %d: %w", 2*i+1, err)
			}
			k.fds[i] = fd
		}
		if k.polled[i] == nil {
			w, err := kickfd.NewPolled(k.fds[i])
			if err != nil {
				return fmt.Errorf("virtio-net: transmit queue %d: %w", 2*i+1, err)
			}
			k.polled[i] = w
		}
		p.tx.kick = k.polled[i]
	}
	k.inUse = true
	return nil
}

// signal wakes pair i's transmit goroutine (or its next wait). It cannot
// fail on an open eventfd; after Close it does nothing.
func (k *queueKicks) signal(i int) {
	k.mu.RLock()
	if i < len(k.fds) && k.fds[i] != nil {
		k.fds[i].Signal()
	}
	k.mu.RUnlock()
}

// signalRx wakes pair i's receive loop when it polls (or its next poll).
func (k *queueKicks) signalRx(i int) {
	k.mu.RLock()
	if i < len(k.rx) && k.rx[i] != nil {
		k.rx[i].Signal()
	}
	k.mu.RUnlock()
}

// idle records that no transmitter waits on the eventfds any more: TakeKick
// may replace them.
func (k *queueKicks) idle() {
	k.mu.Lock()
	k.inUse = false
	k.mu.Unlock()
}

// release closes the device's own eventfds (the transport closes those it
// handed over once Close has returned); later TakeKicks are refused.
func (k *queueKicks) release() {
	k.mu.Lock()
	for i, w := range k.polled {
		if w != nil {
			w.Close()
			k.polled[i] = nil
		}
	}
	for i, fd := range k.fds {
		if fd != nil {
			fd.Close()
			k.fds[i] = nil
		}
	}
	for i, fd := range k.rx {
		if fd != nil {
			fd.Close()
			k.rx[i] = nil
		}
	}
	k.closed = true
	k.mu.Unlock()
}
