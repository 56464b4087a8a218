package virtiopci

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
)

// NotifyBinder attaches an eventfd to a guest physical address range so
// that guest writes there signal the eventfd instead of exiting to the VMM
// (KVM_IOEVENTFD). The transport binds queue q's notify register (at gpa,
// length bytes: 2, the width Linux writes; a VMM may match any length
// instead); the device waits on the eventfd (virtio.KickWaiter) or the
// transport reads it on a goroutine of its own and calls Notify. unbind
// detaches it.
type NotifyBinder interface {
	BindNotify(gpa uint64, length uint32, queue uint16, fd int) (unbind func() error, err error)
}

// notifyWidth is the width of a notify write (le16 queue index).
const notifyWidth = 2

// notifier owns the queues' notify eventfds and the reader goroutines of
// those the device does not wait on itself (virtio.KickWaiter).
type notifier struct {
	binder NotifyBinder
	dev    virtio.Device
	log    *guestlog.Logger
	nq     int

	mu  sync.Mutex
	fds []int
	// files[q] is queue q's eventfd as a non-blocking file read by a
	// goroutine of ours, or nil where the device took the eventfd.
	files   []*os.File
	unbinds []func() error
	wg      sync.WaitGroup
	closed  bool
}

func newNotifier(b NotifyBinder, nq int, dev virtio.Device, log *guestlog.Logger) *notifier {
	return &notifier{binder: b, dev: dev, log: log, nq: nq}
}

// start creates the eventfds, once; mu held. Each is offered to the
// device first; a reader goroutine serves those it does not take. The
// eventfds stay the same until close: a BAR move or a reset changes only
// what KVM binds them to, so the device keeps waiting on the same one.
func (n *notifier) start() error {
	if n.fds != nil {
		return nil
	}
	fds := make([]int, 0, n.nq)
	for q := 0; q < n.nq; q++ {
		// Blocking: a device that takes it reads it on its own thread.
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
		if err != nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fmt.Errorf("virtio-pci: eventfd for queue %d: %w", q, err)
		}
		fds = append(fds, fd)
	}
	n.fds, n.files = fds, make([]*os.File, n.nq)
	kw, _ := n.dev.(virtio.KickWaiter)
	for q, fd := range fds {
		if kw != nil && kw.TakeKick(q, fd) {
			continue
		}
		// A non-blocking descriptor goes to the runtime poller, so Close
		// wakes the reader. Never call Fd() on it: that makes it blocking.
		if err := unix.SetNonblock(fd, true); err != nil {
			n.log.Error("virtio-pci: notify eventfd; kicks go through MMIO exits", "queue", q, "err", err)
		}
		f := os.NewFile(uintptr(fd), fmt.Sprintf("virtio-notify-%d", q))
		n.files[q] = f
		n.wg.Add(1)
		go n.read(f, q)
	}
	return nil
}

// read forwards every signal of queue q's eventfd to the device until the
// file is closed.
func (n *notifier) read(f *os.File, q int) {
	defer n.wg.Done()
	var buf [8]byte
	for {
		if _, err := f.Read(buf[:]); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				n.log.Error("virtio-pci: notify eventfd", "queue", q, "err", err)
			}
			return
		}
		n.dev.Notify(q)
	}
}

// rebind moves the eventfds to the notify registers at base, or detaches
// them when the BAR no longer decodes.
func (n *notifier) rebind(mapped bool, base uint64) {
	if n.binder == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.unbindLocked()
	if !mapped {
		return
	}
	if err := n.start(); err != nil {
		n.log.Error("virtio-pci: notify eventfds; kicks go through MMIO exits", "err", err)
		return
	}
	for q := 0; q < n.nq; q++ {
		un, err := n.binder.BindNotify(base+uint64(q)*NotifyMultiplier, notifyWidth, uint16(q), n.fds[q])
		if err != nil {
			n.log.Error("virtio-pci: bind notify eventfd; kicks go through MMIO exits", "queue", q, "err", err)
			n.unbindLocked()
			return
		}
		n.unbinds = append(n.unbinds, un)
	}
}

func (n *notifier) unbindLocked() error {
	var errs []error
	for _, un := range n.unbinds {
		if err := un(); err != nil {
			errs = append(errs, err)
		}
	}
	n.unbinds = nil
	return errors.Join(errs...)
}

// stopLocked closes the eventfds and waits for the readers; mu held. The
// device must be closed: it may be reading the eventfds it took.
func (n *notifier) stopLocked() {
	for q, fd := range n.fds {
		if f := n.files[q]; f != nil {
			f.Close()
		} else {
			unix.Close(fd)
		}
	}
	n.wg.Wait()
	n.files, n.fds = nil, nil
}

func (n *notifier) close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	err := n.unbindLocked()
	n.stopLocked()
	return err
}
