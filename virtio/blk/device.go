// Package blk is the virtio block device (Virtio 1.2 §5.2) on a raw disk
// image: IN, OUT, FLUSH, GET_ID, and DISCARD / WRITE_ZEROES where the host
// file system supports fallocate's PUNCH_HOLE / ZERO_RANGE.
//
// The image is locked when opened (flock: exclusive read-write, shared
// read-only) so two VMs cannot write one image; a conflict is ErrImageLocked.
// A read-only device never opens the file for writing. The image may be a
// regular file or a block device (locked the same way); the capacity is its
// size (lseek to the end) in 512-byte sectors, rounded down: a trailing
// partial sector is never read or written.
//
// I/O runs on one worker goroutine per queue. It sleeps in a read of the
// queue's kick eventfd (virtio.KickWaiter: the one KVM signals on a guest
// kick, or the device's own, which Notify signals), so a kick wakes the
// thread that serves the queue. A worker takes up to 32 requests at a time and serves reads (or writes) of
// adjacent sectors among them with one preadv (pwritev), up to 1 MiB and
// IOV_MAX segments, then completes each with its own status; if the merged
// transfer fails, each request is tried alone. With Config.Direct the image
// is read and written with O_DIRECT: guest buffers not aligned to the host's
// logical block size go through a per-worker bounce buffer, and ranges that
// are not whole blocks through the page cache. FLUSH is fdatasync; Reset and Close end with an fdatasync, so
// every request the guest saw complete is on the host file when they return.
// If the driver did not accept VIRTIO_BLK_F_FLUSH the device is write-through
// (fdatasync after each write).
//
// Malformed requests: a header of fewer than 16 readable bytes or a chain
// without a writable status byte cannot be answered and fail the device
// (the transport sets DEVICE_NEEDS_RESET), as QEMU does. Everything else
// gets a status: out-of-range sectors, data not a multiple of 512 bytes,
// data in the wrong direction, writes to a read-only disk, and reads or
// writes of more data segments than seg_max or a segment larger than
// size_max (as advertised in the configuration space) are
// VIRTIO_BLK_S_IOERR; unknown request types are VIRTIO_BLK_S_UNSUPP. The used
// length of an answered request is the whole writable length, as in QEMU.
//
// Guest errors are counted (Counters), not logged per request: a queue
// failure or a host I/O error is logged at most once a second per kind.
package blk

import (
	"context"
	"fmt"
	"log/slog"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/kickfd"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Defaults for Config.
const (
	DefaultQueueSize = 256
	MaxQueues        = 64
)

// Config describes one virtio-blk device.
type Config struct {
	// Path is the raw disk image (a regular file or block device).
	Path string
	// ReadOnly opens the image read-only and offers VIRTIO_BLK_F_RO.
	ReadOnly bool
	// Serial is what GET_ID answers: at most 20 bytes, NUL padded.
	Serial string
	// QueueSize is the largest queue size offered (a power of two);
	// 0 means DefaultQueueSize.
	QueueSize uint16
	// NumQueues is the number of request queues (VIRTIO_BLK_F_MQ when
	// above 1), each served by its own worker; 0 means 1.
	NumQueues int
	// Direct opens the image with O_DIRECT, bypassing the host's page
	// cache. Open fails if the file system refuses O_DIRECT.
	Direct bool
	// Logger receives warnings and guest errors (rate limited); nil
	// discards them.
	Logger *slog.Logger

	now func() time.Time // the rate limiter's clock; nil is time.Now (tests set it)
}

// Device is a virtio-blk device. It implements virtio.Device.
type Device struct {
	img       *image
	log       *guestlog.Logger
	id        [IDBytes]byte
	features  uint64
	config    [ConfigSize]byte
	queueSize uint16
	numQueues int
	segMax    uint32 // the seg_max advertised and enforced
	counts    counters

	common *virtio.Common      // activation state; serialises Activate, Reset, Close
	active atomic.Pointer[run] // the running workers

	// kmu guards kicks: queue q's workers wait on kicks[q] (the
	// transport's eventfd or the device's own, made at the first
	// activation) and Notify signals it. inUse: an activation holds them
	// (TakeKick refuses); closed: Close released them.
	kmu    sync.RWMutex
	kicks  []*kickfd.FD
	inUse  bool
	closed bool
}

// run is one activation: its workers and how to stop them. Pause stops the
// workers' goroutines and Resume starts new ones on the same workers.
type run struct {
	workers []*worker       // index = queue; nil where the driver left a queue off
	parent  context.Context // the activation's context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// start runs one goroutine per worker under a new child of r.parent, and
// one that wakes them when it ends (they sleep in a read, not a select).
func (r *run) start() {
	ctx, cancel := context.WithCancel(r.parent)
	r.cancel = cancel
	for _, w := range r.workers {
		if w == nil {
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			w.run(ctx)
		}()
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		<-ctx.Done()
		for _, w := range r.workers {
			if w != nil {
				w.kick.Signal() // cannot fail on an open eventfd
			}
		}
	}()
}

var (
	_ virtio.Device     = (*Device)(nil)
	_ virtio.Pauser     = (*Device)(nil)
	_ virtio.KickWaiter = (*Device)(nil)
)

// Open opens and locks the image and returns the device, ready for a
// transport. A missing or unreadable image, or a locked one
// (ErrImageLocked), is an error here, before the VM starts.
func Open(cfg Config) (*Device, error) {
	if len(cfg.Serial) > IDBytes {
		return nil, fmt.Errorf("virtio-blk: serial %q is longer than %d bytes", cfg.Serial, IDBytes)
	}
	qs := cfg.QueueSize
	if qs == 0 {
		qs = DefaultQueueSize
	}
	if qs < 4 || qs&(qs-1) != 0 || qs > queue.MaxSize {
		return nil, fmt.Errorf("virtio-blk: queue size %d is not a power of two in 4..%d", qs, queue.MaxSize)
	}
	nq := cfg.NumQueues
	if nq == 0 {
		nq = 1
	}
	if nq < 1 || nq > MaxQueues {
		return nil, fmt.Errorf("virtio-blk: %d queues (want 1..%d)", nq, MaxQueues)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	img, err := openImage(cfg.Path, cfg.ReadOnly, cfg.Direct)
	if err != nil {
		return nil, err
	}
	if img.tail != 0 {
		log.Warn("virtio-blk: image size is not a multiple of 512; the last partial sector is not used",
			"path", cfg.Path, "ignored_bytes", img.tail)
	}
	// seg_max leaves room in a chain of the largest queue for the header
	// and the status byte.
	d := &Device{img: img, log: guestlog.New(log, cfg.now), queueSize: qs, numQueues: nq, segMax: uint32(qs) - 2}
	copy(d.id[:], cfg.Serial)

	d.features = virtio.FVersion1 | virtio.FIndirectDesc | virtio.FEventIdx |
		FSizeMax | FSegMax | FBlkSize | FFlush | FTopology
	if cfg.ReadOnly {
		d.features |= FRO
	}
	if nq > 1 {
		d.features |= FMQ
	}
	if img.punchHole {
		d.features |= FDiscard
	}
	if img.punchHole || img.zeroRange {
		d.features |= FWriteZeroes
	}
	exp := uint8(bits.TrailingZeros32(img.blockSize / SectorSize))
	d.config = encodeConfig(configFields{
		capacity:      img.sectors,
		segMax:        d.segMax,
		physBlockExp:  exp,
		minIOSize:     uint16(1) << exp,
		numQueues:     uint16(nq),
		discard:       img.punchHole,
		discardAlign:  img.blockSize / SectorSize,
		writeZeroes:   img.punchHole || img.zeroRange,
		zeroesMayUnmp: img.punchHole,
	})
	d.common = virtio.NewCommon("virtio-blk", d.features, nq, qs)
	d.kicks = make([]*kickfd.FD, nq)
	return d, nil
}

// Type returns virtio.TypeBlock.
func (d *Device) Type() virtio.DeviceType { return virtio.TypeBlock }

// Features returns the feature bits offered.
func (d *Device) Features() uint64 { return d.features }

// NumQueues returns the number of request queues.
func (d *Device) NumQueues() int { return d.numQueues }

// MaxQueueSize returns the largest queue size offered.
func (d *Device) MaxQueueSize() uint16 { return d.queueSize }

// ConfigSize returns the size of struct virtio_blk_config exposed.
func (d *Device) ConfigSize() int { return ConfigSize }

// Capacity returns the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.img.sectors }

// ReadConfig copies configuration bytes at off into p (zeros past the end).
func (d *Device) ReadConfig(off int, p []byte) { virtio.CopyConfig(p, d.config[:], off) }

// WriteConfig ignores writes: no field is writable without CONFIG_WCE,
// which is not offered.
func (d *Device) WriteConfig(off int, p []byte) {}

// Activate starts one worker per enabled queue.
func (d *Device) Activate(ctx context.Context, a virtio.Activation) error {
	return d.common.Activate(a, func(a virtio.Activation) error {
		d.kmu.Lock()
		defer d.kmu.Unlock()
		r := &run{parent: ctx, workers: make([]*worker, d.numQueues)}
		for i, q := range a.Queues {
			if q == nil {
				continue
			}
			if d.kicks[i] == nil {
				k, err := kickfd.New()
				if err != nil {
					return fmt.Errorf("virtio-blk: queue %d: %w", i, err)
				}
				d.kicks[i] = k
			}
			r.workers[i] = newWorker(d, i, q, a, d.kicks[i])
		}
		d.inUse = true
		r.start()
		d.active.Store(r)
		return nil
	})
}

// TakeKick implements virtio.KickWaiter: queue q's worker waits on fd from
// the next activation on. Refused while the device is active (its workers
// wait on the eventfds they have; kicks then come through Notify).
func (d *Device) TakeKick(q int, fd int) bool {
	d.kmu.Lock()
	defer d.kmu.Unlock()
	if d.closed || d.inUse || q < 0 || q >= len(d.kicks) || (d.kicks[q] != nil && !d.kicks[q].Own()) {
		return false
	}
	k, err := kickfd.Adopt(fd)
	if err != nil {
		d.log.Error("virtio-blk: kick eventfd; kicks go through Notify", "queue", q, "err", err)
		return false
	}
	if old := d.kicks[q]; old != nil {
		old.Close()
	}
	d.kicks[q] = k
	return true
}

// Pause stops the workers once each has completed the request it is on
// (every chain taken is in the used ring) and makes completed writes
// durable. Kicks meanwhile wait for Resume.
func (d *Device) Pause() error {
	return d.common.Pause(func() error {
		r := d.active.Load()
		if r == nil {
			return nil
		}
		r.cancel()
		r.wg.Wait()
		if d.img.readOnly {
			return nil
		}
		return d.img.sync()
	})
}

// Resume restarts the workers; each first serves what the driver queued
// meanwhile.
func (d *Device) Resume() error {
	return d.common.Resume(func() error {
		if r := d.active.Load(); r != nil {
			r.start()
		}
		return nil
	})
}

// Counters returns a snapshot of the device's request counters.
func (d *Device) Counters() Counters { return d.counts.snapshot() }

// Notify wakes queue q's worker (signals its kick eventfd). It never
// blocks; a queue that is not running sees the kick when it starts.
func (d *Device) Notify(q int) {
	d.kmu.RLock()
	if q >= 0 && q < len(d.kicks) && d.kicks[q] != nil {
		d.kicks[q].Signal() // cannot fail on an open eventfd
	}
	d.kmu.RUnlock()
}

// Reset stops the workers (each finishes the request it is on) and makes
// completed writes durable. The device can then be activated again.
func (d *Device) Reset() error { return d.common.Reset(d.stop) }

// stop ends the running activation: the workers, then an fdatasync.
func (d *Device) stop() error {
	r := d.active.Swap(nil)
	if r == nil {
		return nil
	}
	r.cancel()
	r.wg.Wait()
	d.kmu.Lock()
	d.inUse = false // the workers are gone: TakeKick may replace an eventfd
	d.kmu.Unlock()
	if d.img.readOnly {
		return nil
	}
	return d.img.sync()
}

// Close stops the device, syncs and closes the image, releasing its lock,
// and closes its own kick eventfds (the transport closes those it handed
// over once Close returns).
func (d *Device) Close() error { return d.common.Close(d.stop, d.release) }

func (d *Device) release() error {
	d.kmu.Lock()
	for i, k := range d.kicks {
		if k != nil {
			k.Close()
			d.kicks[i] = nil
		}
	}
	d.closed = true
	d.kmu.Unlock()
	return d.img.close()
}
