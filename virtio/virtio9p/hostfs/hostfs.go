// Package hostfs serves a host directory as a 9P2000.L file tree (a
// p9.Attacher for github.com/hugelgupf/p9) without letting the guest reach
// anything outside it.
//
// Confinement: the share root is held as an O_PATH descriptor and every
// file the guest walks to is an O_PATH descriptor opened relative to its
// parent's, one name at a time, with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and O_NOFOLLOW (plain
// openat with O_NOFOLLOW on kernels without openat2). Names are checked
// first: "", ".", "..", a '/' or a NUL are EINVAL. Symbolic links are never
// followed on the host: walking through one is ENOTDIR, and the guest reads
// its target with readlink and resolves it in its own namespace. A file is
// opened for I/O by re-opening its O_PATH descriptor (through
// /proc/self/fd), so it is the very inode the walk found even if the name
// was replaced since; only regular files and directories are opened (a
// device node, FIFO or socket is EPERM, and cannot be created).
//
// Rights: the server acts with the rights of the process (the kernel checks
// every open); it never chowns to another user or group, and strips the
// set-user-ID and set-group-ID bits from modes the guest sets. In read-only
// mode every mutation is EROFS.
//
// Mounts inside the share are served as the host sees them (sharing "/"
// needs that); QID paths carry a per-device index so inode numbers of two
// file systems do not collide. Options.Empty hides the directories the
// guest mounts its own file systems on (a shared host "/" would otherwise
// hand the guest the host's /proc and /sys).
package hostfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// MaxWalk is the most names one walk may hold (9P's MAXWELEM).
const MaxWalk = 16

// nameMax is the longest name the guest may give (NAME_MAX).
const nameMax = 255

// DefaultMaxFiles is Options.MaxFiles when zero.
const DefaultMaxFiles = 4096

// Options configure a share.
type Options struct {
	// ReadOnly refuses every mutation with EROFS.
	ReadOnly bool
	// MaxFiles bounds the files (walked fids, each one or two host
	// descriptors) the guest holds at once; past it a walk, attach or
	// create is EMFILE, so a guest cannot exhaust the VMM's descriptors.
	// 0 means DefaultMaxFiles.
	MaxFiles int
	// Empty lists directories in the share, as slash-separated paths
	// from its root ("/proc", "dev/pts"), that the guest sees empty and
	// cannot change: the mount points of file systems the guest mounts
	// itself. A path that is missing, or is not a directory all the way
	// (a symbolic link), is left alone. A directory is known by device
	// and inode, so it is empty under every name it has in the share.
	Empty []string
}

// FS is a shared host directory. It implements p9.Attacher; every Attach
// returns a new root File. It is safe for concurrent use.
type FS struct {
	root     int // O_PATH descriptor of the share root
	readOnly bool
	maxFiles int64
	files    atomic.Int64 // Files not yet closed

	noOpenat2 atomic.Bool // openat2 returned ENOSYS: use openat

	mu   sync.Mutex
	devs map[uint64]uint64 // st_dev -> index, the top bits of QID paths

	empty map[devIno]bool // Options.Empty's directories; read-only after New

	staging staging // direct reads (direct.go)

	closeOnce sync.Once
}

var _ p9.Attacher = (*FS)(nil)

// ErrNotDir is returned by New for a share path that is not a directory.
var ErrNotDir = errors.New("hostfs: share is not a directory")

// New opens dir (following symbolic links: the host's choice) as a share.
func New(dir string, opts Options) (*FS, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("hostfs: open %s: %w", dir, ErrNotDir)
		}
		return nil, fmt.Errorf("hostfs: open %s: %w", dir, err)
	}
	max := int64(opts.MaxFiles)
	if max <= 0 {
		max = DefaultMaxFiles
	}
	fs := &FS{root: fd, readOnly: opts.ReadOnly, maxFiles: max, devs: make(map[uint64]uint64)}
	if err := fs.findEmpty(opts.Empty); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("hostfs: %s: %w", dir, err)
	}
	return fs, nil
}

// devIno identifies a directory of the host.
type devIno struct{ dev, ino uint64 }

// findEmpty records the directories of Options.Empty that the share has.
func (fs *FS) findEmpty(paths []string) error {
	for _, p := range paths {
		names := strings.Split(strings.Trim(p, "/"), "/")
		for _, n := range names {
			if checkName(n) != nil {
				return fmt.Errorf("empty directory %q: want names below the share's root, without \".\" or \"..\"", p)
			}
		}
		st, ok := fs.statBeneath(names)
		if !ok {
			continue
		}
		if fs.empty == nil {
			fs.empty = make(map[devIno]bool)
		}
		fs.empty[devIno{st.Dev, st.Ino}] = true
	}
	return nil
}

// statBeneath looks names up from the root one at a time, as a walk does,
// and reports the directory they name, if they all are directories.
func (fs *FS) statBeneath(names []string) (unix.Stat_t, bool) {
	var st unix.Stat_t
	dir := fs.root
	for _, n := range names {
		fd, err := fs.openBeneath(dir, n, unix.O_PATH|unix.O_DIRECTORY, 0)
		if dir != fs.root {
			unix.Close(dir)
		}
		if err != nil {
			return st, false
		}
		dir = fd
	}
	err := unix.Fstat(dir, &st)
	unix.Close(dir)
	return st, err == nil
}

// isEmpty reports whether a directory is one of Options.Empty's.
func (fs *FS) isEmpty(st *unix.Stat_t) bool {
	return fs.empty[devIno{st.Dev, st.Ino}]
}

// Close releases the share root. Files already attached keep their own
// descriptors until the server closes them.
func (fs *FS) Close() error {
	var err error
	fs.closeOnce.Do(func() { err = unix.Close(fs.root) })
	return err
}

// ReadOnly reports whether the share refuses mutations.
func (fs *FS) ReadOnly() bool { return fs.readOnly }

// NoXattrs reports that the tree shares no extended attributes (see
// File.GetXattr); virtio9p answers their requests itself.
func (fs *FS) NoXattrs() bool { return true }

// Files returns how many Files are open (attached or walked, not closed).
func (fs *FS) Files() int { return int(fs.files.Load()) }

// Attach returns the share root.
func (fs *FS) Attach() (p9.File, error) {
	if err := fs.reserve(); err != nil {
		return nil, err
	}
	fd, err := unix.FcntlInt(uintptr(fs.root), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		fs.files.Add(-1)
		return nil, err
	}
	return fs.newFile(fd)
}

// reserve counts a File about to be made, or refuses it past MaxFiles.
func (fs *FS) reserve() error {
	if fs.files.Add(1) > fs.maxFiles {
		fs.files.Add(-1)
		return unix.EMFILE
	}
	return nil
}

// newFile wraps an O_PATH descriptor, taking ownership of it and of a
// reservation.
func (fs *FS) newFile(fd int) (*File, error) {
	f := &File{fs: fs, p: fd, open: -1}
	if err := unix.Fstat(fd, &f.st); err != nil {
		unix.Close(fd)
		fs.files.Add(-1)
		return nil, err
	}
	f.empty = f.isDir() && fs.isEmpty(&f.st)
	return f, nil
}

// qidPathBits is how many low bits of a QID path hold the inode number;
// the bits above hold the device index.
const qidPathBits = 48

// qid builds the QID of a file from its stat.
func (fs *FS) qid(st *unix.Stat_t) p9.QID {
	return p9.QID{
		Type: p9.FileMode(st.Mode).QIDType(),
		Path: fs.qidPath(st.Dev, st.Ino),
	}
}

func (fs *FS) qidPath(dev, ino uint64) uint64 {
	fs.mu.Lock()
	idx, ok := fs.devs[dev]
	if !ok {
		idx = uint64(len(fs.devs))
		fs.devs[dev] = idx
	}
	fs.mu.Unlock()
	// Past 2^16 devices indices wrap and QIDs may collide: harmless (the
	// guest's caches key on them) and not reachable in practice.
	return idx<<qidPathBits | ino&(1<<qidPathBits-1)
}

// checkName refuses a name that is not exactly one path component.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > nameMax {
		return unix.EINVAL
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] == 0 {
			return unix.EINVAL
		}
	}
	return nil
}

// resolve is the flags every lookup below a directory uses: stay beneath
// it, follow no symbolic link (not even a trailing one: with O_NOFOLLOW
// and O_PATH the link itself is opened).
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openBeneath opens one checked name below dirfd, never following a
// symbolic link.
func (fs *FS) openBeneath(dirfd int, name string, flags int, mode uint32) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NOCTTY // openat2 refuses it with O_PATH
	}
	if !fs.noOpenat2.Load() {
		fd, err := unix.Openat2(dirfd, name, &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolve})
		if !errors.Is(err, unix.ENOSYS) {
			return fd, err
		}
		fs.noOpenat2.Store(true)
	}
	// One component with no '/' and not "..": plain openat cannot leave
	// dirfd either.
	return unix.Openat(dirfd, name, flags, mode)
}

// procPath names the inode behind one of our descriptors, for the calls
// that have no descriptor form for O_PATH files (open, chmod, truncate).
func procPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }
