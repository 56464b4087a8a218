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
// instead) and reads the eventfd on its own goroutine. unbind detaches it.
type NotifyBinder interface {
	BindNotify(gpa uint64, length uint32, queue uint16, fd int) (unbind func() error, err error)
}

// notifyWidth is the width of a notify write (le16 queue index).
const notifyWidth = 2

// notifier owns the queues' notify eventfds and their reader goroutines.
type notifier struct {
	binder NotifyBinder
	dev    virtio.Device
	log    *guestlog.Logger
	nq     int

	mu      sync.Mutex
	fds     []int
	files   []*os.File
	unbinds []func() error
	wg      sync.WaitGroup
	closed  bool
}

func newNotifier(b NotifyBinder, nq int, dev virtio.Device, log *guestlog.Logger) *notifier {
	return &notifier{binder: b, dev: dev, log: log, nq: nq}
}

// start creates the eventfds and their readers, once; mu held.
func (n *notifier) start() error {
	if n.files != nil {
		return nil
	}
	for q := 0; q < n.nq; q++ {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			n.stopLocked()
			return fmt.Errorf("virtio-pci: eventfd for queue %d: %w", q, err)
		}
		// A non-blocking descriptor goes to the runtime poller, so Close
		// wakes the reader. Never call Fd() on it: that makes it blocking.
		f := os.NewFile(uintptr(fd), fmt.Sprintf("virtio-notify-%d", q))
		n.fds = append(n.fds, fd)
		n.files = append(n.files, f)
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

// stopLocked closes the eventfds and waits for the readers; mu held.
func (n *notifier) stopLocked() {
	for _, f := range n.files {
		f.Close()
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
