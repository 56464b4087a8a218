package blk

import (
	"errors"
	"fmt"
	"math/bits"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/virtio/queue"
)

// ErrImageLocked is returned by Open when another process (or another open
// of the same image) holds a conflicting lock: two VMs must not write one
// image.
var ErrImageLocked = errors.New("virtio-blk: disk image is locked by another user")

// iovMax is the kernel's limit on iovecs per preadv/pwritev (UIO_MAXIOV).
const iovMax = 1024

// image is a raw disk image file, locked against other writers.
type image struct {
	fd        int
	path      string
	readOnly  bool
	sectors   uint64 // capacity: the file size rounded down to whole sectors
	tail      uint64 // bytes past the last whole sector (never used)
	punchHole bool   // fallocate(PUNCH_HOLE) works: DISCARD, WRITE_ZEROES with unmap
	zeroRange bool   // fallocate(ZERO_RANGE) works: WRITE_ZEROES without unmap
	blockSize uint32 // the host file system's block size
}

// openImage opens and locks path: read-write with an exclusive lock, or
// read-only (the file is never opened for writing) with a shared lock.
func openImage(path string, readOnly bool) (*image, error) {
	flags, lock, mode := unix.O_RDWR, unix.LOCK_EX, "read-write"
	if readOnly {
		flags, lock, mode = unix.O_RDONLY, unix.LOCK_SH, "read-only"
	}
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: open disk image %q %s: %w", path, mode, err)
	}
	img := &image{fd: fd, path: path, readOnly: readOnly}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("virtio-blk: stat disk image %q: %w", path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG, unix.S_IFBLK:
	default:
		return nil, fmt.Errorf("virtio-blk: disk image %q is not a regular file or block device", path)
	}
	if err := flock(fd, lock|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %q (opening it %s)", ErrImageLocked, path, mode)
		}
		return nil, fmt.Errorf("virtio-blk: lock disk image %q: %w", path, err)
	}
	size, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: size of disk image %q: %w", path, err)
	}
	img.sectors, img.tail = uint64(size)/SectorSize, uint64(size)%SectorSize
	img.blockSize = uint32(st.Blksize)
	if img.blockSize < SectorSize || img.blockSize&(img.blockSize-1) != 0 || img.blockSize > 1<<16 {
		img.blockSize = 4096
	}
	if !readOnly {
		img.probeFallocate(uint64(size))
	}
	ok = true
	return img, nil
}

func flock(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if err != unix.EINTR {
			return err
		}
	}
}

// probeFallocate finds out which fallocate modes the host file system
// supports by trying them on one sector past the end of the file (which
// KEEP_SIZE leaves outside the image).
func (img *image) probeFallocate(size uint64) {
	const keep = unix.FALLOC_FL_KEEP_SIZE
	off := int64(size)
	img.punchHole = fallocate(img.fd, unix.FALLOC_FL_PUNCH_HOLE|keep, off, SectorSize) == nil
	img.zeroRange = fallocate(img.fd, unix.FALLOC_FL_ZERO_RANGE|keep, off, SectorSize) == nil
	if img.zeroRange && img.punchHole {
		// Give back any block the probe allocated past the end.
		_ = fallocate(img.fd, unix.FALLOC_FL_PUNCH_HOLE|keep, off, SectorSize)
	}
}

func fallocate(fd int, mode uint32, off, n int64) error {
	for {
		err := unix.Fallocate(fd, mode, off, n)
		if err != unix.EINTR {
			return err
		}
	}
}

// inRange reports whether n bytes from sector lie inside the image, with
// overflow-checked arithmetic. n must be a multiple of SectorSize.
func (img *image) inRange(sector, n uint64) bool {
	count := n / SectorSize
	return sector <= img.sectors && count <= img.sectors-sector
}

// readv fills segs from the image at byte offset off. A read past the end of
// the file (it shrank under us) is an error.
func (img *image) readv(segs []queue.Buffer, off uint64, iov []unix.Iovec) error {
	return img.rw(segs, off, iov, false)
}

// writev writes segs to the image at byte offset off.
func (img *image) writev(segs []queue.Buffer, off uint64, iov []unix.Iovec) error {
	return img.rw(segs, off, iov, true)
}

// rw transfers segs in batches of at most len(iov) (≤ iovMax) buffers,
// resuming after short transfers and EINTR.
func (img *image) rw(segs []queue.Buffer, off uint64, iov []unix.Iovec, write bool) error {
	op := "read"
	if write {
		op = "write"
	}
	for len(segs) > 0 {
		k := min(len(segs), len(iov))
		for i := range k {
			iov[i].Base = &segs[i].Data[0]
			iov[i].SetLen(len(segs[i].Data))
		}
		var n int
		var err error
		if write {
			n, err = pwritev(img.fd, iov[:k], int64(off))
		} else {
			n, err = preadv(img.fd, iov[:k], int64(off))
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("virtio-blk: %s %q at %#x: %w", op, img.path, off, err)
		}
		if n == 0 {
			return fmt.Errorf("virtio-blk: %s %q at %#x: unexpected end of file", op, img.path, off)
		}
		off += uint64(n)
		// Drop the n bytes done from the front of segs.
		for n > 0 {
			l := len(segs[0].Data)
			if n < l {
				segs[0].Data = segs[0].Data[n:]
				segs[0].GPA += uint64(n)
				break
			}
			n -= l
			segs = segs[1:]
		}
	}
	return nil
}

// sync makes completed writes durable.
func (img *image) sync() error {
	for {
		err := unix.Fdatasync(img.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("virtio-blk: fdatasync %q: %w", img.path, err)
		}
		return nil
	}
}

// discard deallocates n bytes at off (reads then return zeros).
func (img *image) discard(off, n uint64) error {
	if err := fallocate(img.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
		return fmt.Errorf("virtio-blk: punch hole in %q at %#x+%#x: %w", img.path, off, n, err)
	}
	return nil
}

// writeZeroes zeroes n bytes at off. With mayUnmap the range may be
// deallocated; otherwise it stays allocated (ZERO_RANGE, or a punched hole
// allocated again when the file system lacks ZERO_RANGE).
func (img *image) writeZeroes(off, n uint64, mayUnmap bool) error {
	const keep = unix.FALLOC_FL_KEEP_SIZE
	var err error
	switch {
	case mayUnmap && img.punchHole:
		err = fallocate(img.fd, unix.FALLOC_FL_PUNCH_HOLE|keep, int64(off), int64(n))
	case img.zeroRange:
		err = fallocate(img.fd, unix.FALLOC_FL_ZERO_RANGE|keep, int64(off), int64(n))
	case img.punchHole:
		err = fallocate(img.fd, unix.FALLOC_FL_PUNCH_HOLE|keep, int64(off), int64(n))
		if err == nil {
			err = fallocate(img.fd, keep, int64(off), int64(n))
		}
	default:
		err = unix.EOPNOTSUPP
	}
	if err != nil {
		return fmt.Errorf("virtio-blk: write zeroes to %q at %#x+%#x: %w", img.path, off, n, err)
	}
	return nil
}

// close syncs (when writable) and closes the image, releasing its lock.
func (img *image) close() error {
	var errs []error
	if !img.readOnly {
		if err := img.sync(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unix.Close(img.fd); err != nil {
		errs = append(errs, fmt.Errorf("virtio-blk: close %q: %w", img.path, err))
	}
	return errors.Join(errs...)
}

// byteRange converts a sector and a byte count into a file offset, checking
// both against the image.
func (img *image) byteRange(sector, n uint64) (uint64, bool) {
	if n%SectorSize != 0 || !img.inRange(sector, n) {
		return 0, false
	}
	hi, off := bits.Mul64(sector, SectorSize)
	if hi != 0 {
		return 0, false
	}
	return off, true
}
