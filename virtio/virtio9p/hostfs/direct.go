package hostfs

import (
	"math"
	"sync"

	"golang.org/x/sys/unix"
)

// Direct reads: the 9P transport (virtio9p) stages a Tread's destination,
// the request's writable buffers in guest memory, and gives the p9 server
// a key in place of the Tread's offset. The server resolves and checks the
// fid as for any read and calls File.ReadAt with the key, which reads from
// the host file straight into the staged buffers: one copy per byte, where
// reading into the server's buffer and copying that into guest memory made
// two.

// stagedBit marks an offset that is a key. The transport replaces every
// Tread's offset with a key, so the guest never names one; a real offset
// with this bit is past what pread takes anyway (EINVAL).
const stagedBit = 1 << 63

// iovMax is how many buffers one preadv takes (Linux's UIO_MAXIOV).
const iovMax = 1024

// stagedRead is one staged Tread.
type stagedRead struct {
	dst [][]byte // where the data goes (guest memory)
	off uint64   // the guest's offset
	n   int      // bytes put in dst
	ran bool     // File.ReadAt took the key
}

// staging holds the staged reads of one FS.
type staging struct {
	mu   sync.Mutex
	next uint64 // last key given, without stagedBit
	m    map[uint64]*stagedRead
}

// StageRead records dst, the buffers a read at the guest's offset off is
// to fill, and returns the key the server should see as the offset. The
// caller keeps dst valid and calls FinishRead with the key once the
// server's reply is in. A transport that stages reads must stage every
// Tread it passes on: a guest's own offset must never reach File.ReadAt,
// where it could name another request's key.
func (fs *FS) StageRead(dst [][]byte, off uint64) uint64 {
	s := &fs.staging
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = make(map[uint64]*stagedRead)
	}
	s.next++
	key := stagedBit | s.next&^stagedBit
	s.m[key] = &stagedRead{dst: dst, off: off}
	return key
}

// FinishRead forgets key and returns how many bytes the read put in its
// buffers, and whether File.ReadAt took the key at all (it does not when
// the server refuses the read first: unknown fid, not open for reading).
func (fs *FS) FinishRead(key uint64) (n int, ran bool) {
	s := &fs.staging
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m[key]
	if !ok {
		return 0, false
	}
	delete(s.m, key)
	return r.n, r.ran
}

// Staged returns how many reads are staged and not finished.
func (fs *FS) Staged() int {
	fs.staging.mu.Lock()
	defer fs.staging.mu.Unlock()
	return len(fs.staging.m)
}

// readStaged serves File.ReadAt for a key: it reads from fd into the
// staged buffers, once per key. The count it returns to the server is 0:
// the bytes are not in the server's buffer, FinishRead tells the
// transport how many there are.
func (fs *FS) readStaged(fd int, key uint64) error {
	s := &fs.staging
	s.mu.Lock()
	r, ok := s.m[key]
	if ok && !r.ran {
		r.ran = true
	} else {
		ok = false
	}
	s.mu.Unlock()
	if !ok || r.off > math.MaxInt64 {
		return unix.EINVAL
	}
	n, err := preadvAll(fd, r.dst, int64(r.off))
	s.mu.Lock()
	r.n = n
	s.mu.Unlock()
	return err
}

// preadvAll reads from fd at off into dst, in runs of at most iovMax
// buffers, until dst is full or the file ends. An error after some bytes
// ends the read short, as read(2) does.
func preadvAll(fd int, dst [][]byte, off int64) (int, error) {
	if len(dst) == 0 {
		_, err := unix.Pread(fd, nil, off) // the errors a read would give (EISDIR, EBADF)
		return 0, err
	}
	total := 0
	for len(dst) > 0 {
		k := min(len(dst), iovMax)
		want := 0
		for _, b := range dst[:k] {
			want += len(b)
		}
		n, err := unix.Preadv(fd, dst[:k], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if total > 0 {
				return total, nil
			}
			return 0, err
		}
		total += n
		if n < want {
			break
		}
		dst = dst[k:]
	}
	return total, nil
}
