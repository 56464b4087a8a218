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
	fd        int // the image, opened with O_DIRECT when direct
	bfd       int // the image through the page cache: fd itself unless direct
	path      string
	readOnly  bool
	direct    bool   // fd bypasses the page cache (Config.Direct)
	align     uint64 // what O_DIRECT needs aligned: file offset, length, buffer address
	sectors   uint64 // capacity: the file size rounded down to whole sectors
	tail      uint64 // bytes past the last whole sector (never used)
	punchHole bool   // fallocate(PUNCH_HOLE) works: DISCARD, WRITE_ZEROES with unmap
	zeroRange bool   // fallocate(ZERO_RANGE) works: WRITE_ZEROES without unmap
	blockSize uint32 // the host file system's block size
}

// openImage opens and locks path: read-write with an exclusive lock, or
// read-only (the file is never opened for writing) with a shared lock.
// With direct the image is opened a second time, with O_DIRECT, through
// /proc/self/fd (so it is the same file even if path is renamed meanwhile).
func openImage(path string, readOnly, direct bool) (*image, error) {
	flags, lock, mode := unix.O_RDWR, unix.LOCK_EX, "read-write"
	if readOnly {
		flags, lock, mode = unix.O_RDONLY, unix.LOCK_SH, "read-only"
	}
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-blk: open disk image %q %s: %w", path, mode, err)
	}
	img := &image{fd: fd, bfd: fd, path: path, readOnly: readOnly, align: SectorSize}
	ok := false
	defer func() {
		if !ok {
			img.closeFDs()
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
	if direct {
		if err := img.openDirect(flags, st.Mode&unix.S_IFMT == unix.S_IFBLK); err != nil {
			return nil, err
		}
	}
	ok = true
	return img, nil
}

// openDirect opens the O_DIRECT descriptor and finds the alignment it
// needs: a block device's logical block size, or for a file 512 bytes if a
// 512-byte read at a 512-byte (not 4096-byte) aligned buffer works, else
// 4096.
func (img *image) openDirect(flags int, blockDev bool) error {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", img.bfd), flags|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("virtio-blk: disk image %q: its file system refuses O_DIRECT (the direct option): %w", img.path, err)
	}
	if err != nil {
		return fmt.Errorf("virtio-blk: open disk image %q with O_DIRECT (the direct option): %w", img.path, err)
	}
	img.fd, img.direct, img.align = fd, true, 4096
	if blockDev {
		n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
		if err != nil {
			return fmt.Errorf("virtio-blk: logical block size of %q (BLKSSZGET): %w", img.path, err)
		}
		if n < SectorSize || n&(n-1) != 0 || n > 1<<16 {
			return fmt.Errorf("virtio-blk: %q has a logical block size of %d bytes", img.path, n)
		}
		img.align = uint64(n)
		return nil
	}
	if img.sectors*SectorSize >= 4096 {
		buf := alignedBuffer(2*SectorSize, 4096)
		for {
			_, err := unix.Pread(fd, buf[SectorSize:], 0)
			if err == unix.EINTR {
				continue
			}
			if err == nil {
				img.align = SectorSize
			}
			break
		}
	}
	return nil
}

// alignedBuffer returns n bytes whose address is a multiple of align (a
// power of two).
func alignedBuffer(n int, align uint64) []byte {
	b := make([]byte, n+int(align))
	skip := int((align - uint64(addrOf(b))%align) % align)
	return b[skip : skip+n : skip+n]
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

// rw transfers segs (each non-empty) between the image's descriptor fd
// and guest memory at byte offset off, at most len(iov) (≤ iovMax) buffers
// per call, resuming after short transfers and EINTR. segs is not changed,
// so a caller can try the same buffers again. A read past the end of the
// file (it shrank under us) is an error.
func (img *image) rw(fd int, segs []queue.Buffer, off uint64, iov []unix.Iovec, write bool) error {
	op := "read"
	if write {
		op = "write"
	}
	skip := 0 // bytes of segs[0] already done
	for len(segs) > 0 {
		k := min(len(segs), len(iov))
		for i := range k {
			d := segs[i].Data
			if i == 0 {
				d = d[skip:]
			}
			iov[i].Base = &d[0]
			iov[i].SetLen(len(d))
		}
		var n int
		var err error
		if write {
			n, err = pwritev(fd, iov[:k], int64(off))
		} else {
			n, err = preadv(fd, iov[:k], int64(off))
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
		// Step over the n bytes done.
		for n > 0 {
			if l := len(segs[0].Data) - skip; n < l {
				skip += n
				break
			} else {
				n -= l
			}
			segs, skip = segs[1:], 0
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
	if err := img.closeFDs(); err != nil {
		errs = append(errs, fmt.Errorf("virtio-blk: close %q: %w", img.path, err))
	}
	return errors.Join(errs...)
}

// closeFDs closes the image's descriptors.
func (img *image) closeFDs() error {
	var err error
	if img.fd != img.bfd {
		err = unix.Close(img.fd)
	}
	if e := unix.Close(img.bfd); err == nil {
		err = e
	}
	return err
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
