package virtionet

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
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

// FileBackend is a Backend on a non-blocking file descriptor that carries
// one frame per read and write: a TAP device, or a SOCK_SEQPACKET or
// SOCK_DGRAM socket. Reads and writes go through the Go poller, so
// SetDeadline unblocks them. It offers no offloads.
type FileBackend struct {
	f       *os.File
	rc      syscall.RawConn
	vnetHdr bool

	// State of the one read in progress, so the closure handed to
	// RawConn.Read is made once and reads do not allocate.
	rbuf  []byte
	rn    int
	rerr  error
	rwait bool
	read  func(fd uintptr) bool
}

var _ Backend = (*FileBackend)(nil)

// NewFileBackend wraps f, which must have been made from a non-blocking
// descriptor (os.NewFile of an O_NONBLOCK fd) so that it is pollable.
// vnetHdr says whether frames on f carry a 12-byte virtio-net header. The
// backend owns f from now on.
func NewFileBackend(f *os.File, vnetHdr bool) (*FileBackend, error) {
	// Deadlines stop the device's goroutines: refuse a file without them
	// (one made from a blocking descriptor) rather than hang on Reset.
	if err := f.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("virtio-net: backend %s is not pollable (make it from an O_NONBLOCK descriptor): %w", f.Name(), err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("virtio-net: backend %s: %w", f.Name(), err)
	}
	b := &FileBackend{f: f, rc: rc, vnetHdr: vnetHdr}
	b.read = func(fd uintptr) bool {
		for {
			n, err := unix.Read(int(fd), b.rbuf)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				if b.rwait {
					return false // wait for the poller
				}
				b.rn, b.rerr = 0, ErrWouldBlock
			case err != nil:
				b.rn, b.rerr = 0, err
			case n == 0 && len(b.rbuf) > 0:
				b.rn, b.rerr = 0, io.EOF // the peer of a socket closed
			default:
				b.rn, b.rerr = n, nil
			}
			return true
		}
	}
	return b, nil
}

// ReadFrame implements Backend.
func (b *FileBackend) ReadFrame(p []byte, wait bool) (int, error) {
	b.rbuf, b.rwait = p, wait
	err := b.rc.Read(b.read)
	b.rbuf = nil
	if err != nil {
		return 0, err
	}
	return b.rn, b.rerr
}

// WriteFrame implements Backend.
func (b *FileBackend) WriteFrame(p []byte) error {
	_, err := b.f.Write(p)
	return err
}

// SetDeadline implements Backend.
func (b *FileBackend) SetDeadline(t time.Time) error { return b.f.SetDeadline(t) }

// VnetHdr implements Backend.
func (b *FileBackend) VnetHdr() bool { return b.vnetHdr }

// Offloads implements Backend: none.
func (b *FileBackend) Offloads() Offload { return 0 }

// SetOffload implements Backend; only 0 is accepted.
func (b *FileBackend) SetOffload(o Offload) error {
	if o != 0 {
		return fmt.Errorf("virtio-net: backend %s has no offloads (asked for %#x)", b.f.Name(), o)
	}
	return nil
}

// Close implements Backend.
func (b *FileBackend) Close() error { return b.f.Close() }

// File returns the underlying file.
func (b *FileBackend) File() *os.File { return b.f }
