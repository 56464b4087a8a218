// Package virtio9p is the virtio 9P transport device (Virtio 1.2 §5.17,
// device ID 9): it serves a 9P2000.L file tree (a p9.Attacher, such as
// virtio/virtio9p/hostfs) to the guest through one request queue, with
// github.com/hugelgupf/p9's server doing the protocol.
//
// Framing: each descriptor chain holds one request. Its device-readable
// part holds the T-message, its device-writable part receives the
// R-message (as Linux's 9p virtio transport lays them out, including its
// zero-copy reads and writes that split the data into separate buffers).
// The transport copies the first bytes of each T-message, checks the size
// field against the chain and the negotiated msize, and rewrites what the
// server must not see raw: the tag becomes the index of the request's slot
// (so guest tags may repeat and replies find their chain), Tflush's oldtag
// the slot of the request it names, Tversion's msize is capped at
// Config.MaxMessageSize, and Tread/Treaddir counts at msize and at the
// chain's writable bytes, less the reply header (a read into a short
// buffer is a short read). The reply's tag is set back to the guest's.
//
// Reads: with a tree that implements DirectReader (hostfs), every Tread's
// offset is replaced by a key naming the chain's data buffers, and the
// file reads straight into guest memory; the transport then writes the
// Rread's header and count itself. Requests are taken from the queue by
// the server goroutine waiting for the next message, which then serves
// it: no goroutine hand-off between the notification and the reply. The
// reply's interrupt is signalled by a goroutine of its own, outside the
// server's send lock (an irqfd write may last until the woken vCPU halts
// again, on a host with few CPUs), coalescing the replies pushed
// meanwhile.
//
// Bounds: at most Config.MaxInFlight requests are taken from the queue at
// once (the server runs each on its own goroutine); message sizes are
// bounded by msize; the number of files the guest holds is bounded by the
// file tree (hostfs.Options.MaxFiles).
//
// Guest faults: a request whose size field does not fit its chain, that is
// larger than msize or that precedes Tversion is answered with Rlerror
// (EBADMSG, EMSGSIZE, EPROTO) and counted in GuestErrors. A chain with
// fewer than 7 readable or 11 writable bytes, a reply larger than the
// writable part (as QEMU does), or a message the server cannot decode fail
// the device (DEVICE_NEEDS_RESET) and count in ProtocolErrors. Faults are
// logged at most once a second per kind.
//
// Snapshots: Pause stops taking chains once those taken are answered and
// keeps the session (fids stay, a resumed mount works on). SaveState
// refuses while the guest holds fids or is mid-mount (ErrSessionOpen: a
// host file handle cannot go into a snapshot); the transport tracks the
// fids the p9 server's replies create and drop to know. A restored
// device serves a fresh session: the guest mounts after the restore.
package virtio9p

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hugelgupf/p9/p9"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// Defaults and limits for Config.
const (
	DefaultQueueSize      = 128
	DefaultMaxMessageSize = 1<<20 + 4096 // 1 MiB of read or write data per message, plus headers
	MinMessageSize        = 4096
	MaxMessageSize        = 4 << 20 // the p9 server's own ceiling
	DefaultMaxInFlight    = 16
	MaxInFlight           = 1024
)

// Config describes one virtio-9p device.
type Config struct {
	// Tag is the mount tag the guest mounts by (mount -t 9p TAG DIR):
	// 1..MaxTagLen bytes of [A-Za-z0-9._-] (sharetag.Check).
	Tag string
	// FS is the file tree served. Close closes it if it is an io.Closer.
	FS p9.Attacher
	// QueueSize is the largest queue size offered (a power of two);
	// 0 means DefaultQueueSize.
	QueueSize uint16
	// MaxMessageSize caps the msize the guest negotiates; 0 means
	// DefaultMaxMessageSize.
	MaxMessageSize uint32
	// MaxInFlight bounds the requests served at once; 0 means
	// DefaultMaxInFlight.
	MaxInFlight int
	// Logger receives warnings and guest errors (rate limited); nil
	// discards them.
	Logger *slog.Logger
	// PauseWait bounds how long Pause waits for requests in flight;
	// 0 means DefaultPauseWait.
	PauseWait time.Duration

	now func() time.Time // the rate limiter's clock; nil is time.Now
}

// XattrLess is implemented by a Config.FS that may have no extended
// attributes (hostfs.FS): the device then answers every xattr request
// with EOPNOTSUPP itself, as the p9 server would answer EINVAL.
type XattrLess interface{ NoXattrs() bool }

// ReadOnlyer is implemented by a Config.FS that can refuse every
// mutation (hostfs.FS): the flag is part of the device's saved state.
type ReadOnlyer interface{ ReadOnly() bool }

// DirectReader is implemented by a Config.FS whose files can read a
// Tread's data straight into the request's writable buffers in guest
// memory (hostfs.FS): one copy per byte instead of two (into the server's
// buffer, then into the chain). The device stages every Tread's data
// buffers and offset with StageRead and gives the server the key it
// returns in place of the offset; the file's ReadAt, called with the key,
// fills the staged buffers and returns 0, and FinishRead, called once the
// reply is in, says how many bytes it put there and whether it ran.
type DirectReader interface {
	StageRead(dst [][]byte, off uint64) (key uint64)
	FinishRead(key uint64) (n int, ran bool)
}

// Device is a virtio-9p device. It implements virtio.Device.
type Device struct {
	tag         string
	readOnly    bool
	pauseWait   time.Duration
	fs          p9.Attacher
	log         *guestlog.Logger
	config      []byte
	features    uint64
	queueSize   uint16
	maxMsize    uint32
	maxInFlight int
	counts      counters
	// noXattrs: the tree has no extended attributes, and the transport
	// answers their requests itself (see conn.accept).
	noXattrs bool
	// direct: the tree reads Tread data into guest memory (conn.stageRead).
	direct DirectReader

	common *virtio.Common
	active atomic.Pointer[conn]
}

var (
	_ virtio.Device   = (*Device)(nil)
	_ virtio.Pauser   = (*Device)(nil)
	_ virtio.Stateful = (*Device)(nil)
)

// New checks cfg and returns the device, ready for a transport.
func New(cfg Config) (*Device, error) {
	if err := sharetag.Check(cfg.Tag); err != nil {
		return nil, fmt.Errorf("virtio-9p: %w", err)
	}
	if cfg.FS == nil {
		return nil, fmt.Errorf("virtio-9p: tag %q: no file tree", cfg.Tag)
	}
	qs := cfg.QueueSize
	if qs == 0 {
		qs = DefaultQueueSize
	}
	if qs < 4 || qs&(qs-1) != 0 || qs > queue.MaxSize {
		return nil, fmt.Errorf("virtio-9p: queue size %d is not a power of two in 4..%d", qs, queue.MaxSize)
	}
	msize := cfg.MaxMessageSize
	if msize == 0 {
		msize = DefaultMaxMessageSize
	}
	if msize < MinMessageSize || msize > MaxMessageSize {
		return nil, fmt.Errorf("virtio-9p: message size %d (want %d..%d)", msize, MinMessageSize, MaxMessageSize)
	}
	inflight := cfg.MaxInFlight
	if inflight == 0 {
		inflight = DefaultMaxInFlight
	}
	if inflight < 1 || inflight > MaxInFlight {
		return nil, fmt.Errorf("virtio-9p: %d requests in flight (want 1..%d)", inflight, MaxInFlight)
	}
	if cfg.PauseWait < 0 {
		return nil, fmt.Errorf("virtio-9p: pause wait %v is negative", cfg.PauseWait)
	}
	wait := cfg.PauseWait
	if wait == 0 {
		wait = DefaultPauseWait
	}
	d := &Device{
		tag:         cfg.Tag,
		pauseWait:   wait,
		fs:          cfg.FS,
		log:         guestlog.New(cfg.Logger, cfg.now),
		config:      encodeConfig(cfg.Tag),
		features:    virtio.FVersion1 | virtio.FIndirectDesc | virtio.FEventIdx | FMountTag,
		queueSize:   qs,
		maxMsize:    msize,
		maxInFlight: inflight,
	}
	if x, ok := cfg.FS.(XattrLess); ok {
		d.noXattrs = x.NoXattrs()
	}
	if r, ok := cfg.FS.(ReadOnlyer); ok {
		d.readOnly = r.ReadOnly()
	}
	if r, ok := cfg.FS.(DirectReader); ok {
		d.direct = r
	}
	d.common = virtio.NewCommon("virtio-9p", d.features, 1, qs)
	return d, nil
}

// Type returns virtio.TypeP9.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeP9 }

// Features returns the feature bits offered.
func (d *Device) Features() uint64 { return d.features }

// NumQueues returns 1: the request queue.
func (d *Device) NumQueues() int { return 1 }

// MaxQueueSize returns the largest queue size offered.
func (d *Device) MaxQueueSize() uint16 { return d.queueSize }

// ConfigSize returns the size of struct virtio_9p_config with the tag.
func (d *Device) ConfigSize() int { return len(d.config) }

// ReadConfig copies configuration bytes at off into p (zeros past the end).
func (d *Device) ReadConfig(off int, p []byte) { virtio.CopyConfig(p, d.config, off) }

// WriteConfig ignores writes: the configuration is read-only.
func (d *Device) WriteConfig(int, []byte) {}

// Counters returns a snapshot of the device's counters.
func (d *Device) Counters() Counters { return d.counts.snapshot() }

// Activate starts a 9P connection on the request queue: a worker taking
// chains, and the p9 server reading them.
func (d *Device) Activate(ctx context.Context, a virtio.Activation) error {
	return d.common.Activate(a, func(a virtio.Activation) error {
		if a.Queues[0] == nil {
			return nil // nothing to serve until the driver enables the queue
		}
		c := newConn(d, a)
		c.start(ctx)
		d.active.Store(c)
		return nil
	})
}

// Notify wakes the worker. It never blocks.
func (d *Device) Notify(q int) {
	if c := d.active.Load(); c != nil && q == 0 {
		c.wake()
	}
}

// Reset ends the connection: the worker stops, requests in flight finish
// (their replies are dropped), and every file the guest held is closed.
func (d *Device) Reset() error { return d.common.Reset(d.stop) }

func (d *Device) stop() error {
	if c := d.active.Swap(nil); c != nil {
		c.stop()
	}
	return nil
}

// Close resets the device and closes the file tree if it is an io.Closer.
func (d *Device) Close() error {
	return d.common.Close(d.stop, func() error {
		if c, ok := d.fs.(io.Closer); ok {
			return c.Close()
		}
		return nil
	})
}
