package virtionet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Offload is a set of segmentation and checksum offloads a backend can carry
// in its virtio-net headers (the TUN_F_* flags of a TAP device).
type Offload uint8

// Offloads.
const (
	OffloadCsum   Offload = 1 << iota // partial checksums (TUN_F_CSUM)
	OffloadTSO4                       // TCPv4 segmentation (TUN_F_TSO4); needs OffloadCsum
	OffloadTSO6                       // TCPv6 segmentation (TUN_F_TSO6); needs OffloadCsum
	OffloadTSOECN                     // TSO with the ECN bit (TUN_F_TSO_ECN); needs TSO4 or TSO6
)

// ErrWouldBlock is returned by Backend.ReadFrame without waiting when no
// frame is queued.
var ErrWouldBlock = errors.New("virtio-net: backend has no frame queued")

// Queue is one host queue of a backend: whole frames in and out, and the
// deadline that stops the device's goroutines blocked on it. Each queue
// pair's receive goroutine alone calls ReadFrame, its transmit goroutine
// alone WriteFrame; SetDeadline may be called from any goroutine.
type Queue interface {
	// ReadFrame reads one frame into p and returns its length. A frame
	// longer than p is cut to len(p). With wait false it returns
	// ErrWouldBlock at once when no frame is queued; with wait true it waits
	// for one (or for the deadline).
	ReadFrame(p []byte, wait bool) (int, error)
	// WriteFrame writes one frame, waiting while the host side is full (or
	// until the deadline).
	WriteFrame(p []byte) error
	// SetDeadline makes blocked and later ReadFrame and WriteFrame calls
	// return an error matching os.ErrDeadlineExceeded once t has passed.
	// The zero time clears it. The device uses it to stop its goroutines.
	SetDeadline(t time.Time) error
}

// PollQueue is a Queue on one descriptor whose readiness the device can
// wait for itself with poll(2), beside its own eventfd, on the thread that
// serves the receive queue: a frame then wakes that thread directly, not
// the runtime's poller and then a goroutine. ReadFrame with wait false
// still does the reads.
type PollQueue interface {
	Queue
	// PollFD returns the descriptor; it stays open until Close.
	PollFD() int
}

// Backend is the host side of the NIC, such as a TAP device (virtio/virtionet/tap)
// or one end of a socket pair. Its Queue methods are the first queue
// pair's (and the only one's, unless it is a MultiQueue); the rest are the
// whole backend's. Each ReadFrame and WriteFrame carries one whole frame.
type Backend interface {
	Queue
	// VnetHdr reports whether each frame, both ways, starts with a 12-byte
	// struct virtio_net_hdr_v1 (a TAP opened with IFF_VNET_HDR and
	// TUNSETVNETHDRSZ 12). Without it the device adds and strips the header.
	VnetHdr() bool
	// Offloads returns the offloads the backend accepts in frames written to
	// it and can be told to produce in frames read from it. Only meaningful
	// with VnetHdr.
	Offloads() Offload
	// SetOffload chooses the offloads the backend may use in frames it gives
	// the device (TUNSETOFFLOAD), on every queue: the ones the guest
	// accepted. 0 makes the host complete checksums and segment before the
	// device sees a frame.
	SetOffload(o Offload) error
	// Close releases the backend, every queue of it.
	Close() error
}

// MultiQueue is a Backend with several host queues, one per queue pair (a
// multi-queue TAP, whose queues the kernel picks by flow hash). With two
// or more the device offers VIRTIO_NET_F_MQ with max_virtqueue_pairs =
// NumQueues().
type MultiQueue interface {
	Backend
	// NumQueues returns how many queues the backend has (at least 1).
	NumQueues() int
	// Queue returns queue i, 0 <= i < NumQueues(); queue 0 is the Backend
	// itself.
	Queue(i int) Queue
	// SetQueueEnabled lets the host steer frames to queue i (i >= 1), or
	// stops it (a TAP's TUNSETQUEUE attach and detach): the device turns off
	// the queues of the pairs the guest does not use, so no frame waits
	// where nothing reads. All queues start enabled.
	SetQueueEnabled(i int, on bool) error
}

// FileBackend is a Backend on a file descriptor that carries one frame per
// read and write: a TAP device, or a SOCK_SEQPACKET or SOCK_DGRAM socket.
//
// It keeps the descriptor out of the Go runtime's poller and waits with
// poll(2) itself, on the calling thread, beside an eventfd that deadlines
// and Close signal. A descriptor in the runtime's poller wakes the poller's
// thread for every frame that arrives, even when the device's receive loop
// polls the descriptor itself (PollQueue) and nothing waits in the runtime:
// on a receive stream that cost as much host CPU again as the reads.
// It offers no offloads.
type FileBackend struct {
	name    string
	fd      int // non-blocking; open until Close
	stopFD  int // non-blocking eventfd: readable while a deadline has passed or Close began
	vnetHdr bool

	// ops holds a read lock for each read, write and Control in progress,
	// so that Close closes fd only after they have left it.
	ops    sync.RWMutex
	closed atomic.Bool
	late   atomic.Bool // the deadline has passed

	mu    sync.Mutex // guards timer and closing
	timer *time.Timer

	rfds, wfds [2]unix.PollFd // one reader and one writer at a time (Queue); kept so a wait allocates nothing
}

var (
	_ Backend   = (*FileBackend)(nil)
	_ PollQueue = (*FileBackend)(nil)
)

// NewFileBackend takes over f's descriptor: it keeps a non-blocking
// duplicate out of the runtime's poller and closes f (on error f is left
// as it was). vnetHdr says whether frames on it carry a 12-byte
// virtio-net header.
func NewFileBackend(f *os.File, vnetHdr bool) (*FileBackend, error) {
	nfd, err := dupNonblock(f)
	if err != nil {
		return nil, err
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(nfd)
		return nil, fmt.Errorf("virtio-net: backend %s: eventfd: %w", f.Name(), err)
	}
	// Closing f takes its descriptor out of the runtime's poller; the
	// duplicate was never in it.
	f.Close()
	b := &FileBackend{name: f.Name(), fd: nfd, stopFD: efd, vnetHdr: vnetHdr}
	b.rfds = [2]unix.PollFd{{Fd: int32(nfd), Events: unix.POLLIN}, {Fd: int32(efd), Events: unix.POLLIN}}
	b.wfds = [2]unix.PollFd{{Fd: int32(nfd), Events: unix.POLLOUT}, {Fd: int32(efd), Events: unix.POLLIN}}
	return b, nil
}

// begin starts an operation: it fails once Close began or the deadline
// passed. Each successful begin is followed by ops.RUnlock.
func (b *FileBackend) begin() error {
	b.ops.RLock()
	switch {
	case b.closed.Load():
		b.ops.RUnlock()
		return fmt.Errorf("virtio-net: backend %s: %w", b.name, os.ErrClosed)
	case b.late.Load():
		b.ops.RUnlock()
		return fmt.Errorf("virtio-net: backend %s: %w", b.name, os.ErrDeadlineExceeded)
	}
	return nil
}

// poll waits until one of fds is ready, across signals.
func poll(fds []unix.PollFd) error {
	for {
		_, err := unix.Ppoll(fds, nil, nil)
		if err != unix.EINTR {
			return err
		}
	}
}

// wait polls fds (the descriptor and the stop eventfd) until the
// descriptor is ready, or says why it will not be.
func (b *FileBackend) wait(fds *[2]unix.PollFd) error {
	for {
		if err := poll(fds[:]); err != nil {
			return fmt.Errorf("virtio-net: backend %s: poll: %w", b.name, err)
		}
		if fds[1].Revents != 0 {
			if b.closed.Load() {
				return fmt.Errorf("virtio-net: backend %s: %w", b.name, os.ErrClosed)
			}
			if b.late.Load() {
				return fmt.Errorf("virtio-net: backend %s: %w", b.name, os.ErrDeadlineExceeded)
			}
			continue // a deadline cleared since it was signalled: drained by SetDeadline
		}
		return nil
	}
}

// ReadFrame implements Backend.
func (b *FileBackend) ReadFrame(p []byte, wait bool) (int, error) {
	if err := b.begin(); err != nil {
		return 0, err
	}
	defer b.ops.RUnlock()
	for {
		n, err := unix.Read(b.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if !wait {
				return 0, ErrWouldBlock
			}
			if err := b.wait(&b.rfds); err != nil {
				return 0, err
			}
			continue
		case err != nil:
			return 0, fmt.Errorf("virtio-net: read backend %s: %w", b.name, err)
		case n == 0 && len(p) > 0:
			return 0, io.EOF // the peer of a socket closed
		}
		return n, nil
	}
}

// WriteFrame implements Backend.
func (b *FileBackend) WriteFrame(p []byte) error {
	if err := b.begin(); err != nil {
		return err
	}
	defer b.ops.RUnlock()
	for {
		_, err := unix.Write(b.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			if err := b.wait(&b.wfds); err != nil {
				return err
			}
			continue
		case err != nil:
			return fmt.Errorf("virtio-net: write backend %s: %w", b.name, err)
		}
		return nil
	}
}

// PollFD implements PollQueue.
func (b *FileBackend) PollFD() int { return b.fd }

// SetDeadline implements Backend.
func (b *FileBackend) SetDeadline(t time.Time) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return fmt.Errorf("virtio-net: backend %s: %w", b.name, os.ErrClosed)
	}
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	d := time.Until(t)
	if !t.IsZero() && d <= 0 {
		b.expire()
		return nil
	}
	var buf [8]byte
	unix.Read(b.stopFD, buf[:]) // drain first (EAGAIN when not signalled): no wait then sees it readable and not late
	b.late.Store(false)
	if !t.IsZero() {
		var tm *time.Timer
		tm = time.AfterFunc(d, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			if b.timer == tm && !b.closed.Load() { // not replaced meanwhile
				b.expire()
			}
		})
		b.timer = tm
	}
	return nil
}

// expire marks the deadline passed and wakes every wait; b.mu held.
func (b *FileBackend) expire() {
	b.late.Store(true)
	b.signalStop()
}

func (b *FileBackend) signalStop() {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	unix.Write(b.stopFD, one[:]) // cannot fail short of the counter's limit
}

// VnetHdr implements Backend.
func (b *FileBackend) VnetHdr() bool { return b.vnetHdr }

// Offloads implements Backend: none.
func (b *FileBackend) Offloads() Offload { return 0 }

// SetOffload implements Backend; only 0 is accepted.
func (b *FileBackend) SetOffload(o Offload) error {
	if o != 0 {
		return fmt.Errorf("virtio-net: backend %s has no offloads (asked for %#x)", b.name, o)
	}
	return nil
}

// Control calls fn with the descriptor, which stays open while fn runs
// (for ioctls such as a TAP's TUNSETOFFLOAD).
func (b *FileBackend) Control(fn func(fd int) error) error {
	b.ops.RLock()
	defer b.ops.RUnlock()
	if b.closed.Load() {
		return fmt.Errorf("virtio-net: backend %s: %w", b.name, os.ErrClosed)
	}
	return fn(b.fd)
}

// Name returns the name of the file the backend was made from.
func (b *FileBackend) Name() string { return b.name }

// Close implements Backend: it wakes the reads and writes that wait and
// closes the descriptor once they have returned.
func (b *FileBackend) Close() error {
	b.mu.Lock()
	if b.closed.Swap(true) {
		b.mu.Unlock()
		return nil
	}
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.signalStop()
	b.mu.Unlock()
	b.ops.Lock() // every operation in progress has seen closed
	defer b.ops.Unlock()
	return errors.Join(unix.Close(b.fd), unix.Close(b.stopFD))
}
