package hostfs

import (
	"encoding/binary"
	"math"
	"slices"
	"sync"

	"github.com/hugelgupf/p9/linux"
	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// File is one file of a share: an O_PATH descriptor of the inode a walk
// found, and the descriptor Open or Create opened on it. It implements
// p9.File.
type File struct {
	fs *FS
	p  int         // O_PATH descriptor, for the life of the File
	st unix.Stat_t // at walk time: the type never changes for an inode
	// empty: one of Options.Empty's directories, which the guest sees
	// with nothing in it and cannot change.
	empty bool

	mu      sync.Mutex // guards open's life and the directory offset
	open    int        // descriptor from Open/Create, or -1
	closed  bool
	dirents []byte // getdents buffer, reused
}

var _ p9.File = (*File)(nil)

func (f *File) isDir() bool     { return f.st.Mode&unix.S_IFMT == unix.S_IFDIR }
func (f *File) isReg() bool     { return f.st.Mode&unix.S_IFMT == unix.S_IFREG }
func (f *File) isSymlink() bool { return f.st.Mode&unix.S_IFMT == unix.S_IFLNK }

// Walk opens names one at a time below f; an empty walk clones f.
func (f *File) Walk(names []string) ([]p9.QID, p9.File, error) {
	if len(names) > MaxWalk {
		return nil, nil, unix.EINVAL
	}
	if len(names) == 0 {
		if err := f.fs.reserve(); err != nil {
			return nil, nil, err
		}
		fd, err := unix.FcntlInt(uintptr(f.p), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			f.fs.files.Add(-1)
			return nil, nil, err
		}
		nf, err := f.fs.newFile(fd)
		if err != nil {
			return nil, nil, err
		}
		return nil, nf, nil
	}
	qids := make([]p9.QID, 0, len(names))
	cur := f
	for _, name := range names {
		nf, err := cur.walkOne(name)
		if cur != f {
			cur.Close()
		}
		if err != nil {
			return nil, nil, err
		}
		qids = append(qids, f.fs.qid(&nf.st))
		cur = nf
	}
	return qids, cur, nil
}

// walkOne opens one name below directory f.
func (f *File) walkOne(name string) (*File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if !f.isDir() {
		return nil, unix.ENOTDIR
	}
	if f.empty {
		return nil, unix.ENOENT
	}
	if err := f.fs.reserve(); err != nil {
		return nil, err
	}
	fd, err := f.fs.openBeneath(f.p, name, unix.O_PATH, 0)
	if err != nil {
		f.fs.files.Add(-1)
		if err == unix.ELOOP || err == unix.EXDEV {
			// A symbolic link inside a path, or resolution leaving
			// the directory: both mean the name is not walkable.
			return nil, unix.ENOTDIR
		}
		return nil, err
	}
	return f.fs.newFile(fd)
}

// WalkGetAttr is not offered: the server falls back to Walk and GetAttr
// on the library's own ENOSYS value (a unix.Errno does not match it).
func (f *File) WalkGetAttr([]string) ([]p9.QID, p9.File, p9.AttrMask, p9.Attr, error) {
	return nil, nil, p9.AttrMask{}, p9.Attr{}, linux.ENOSYS
}

// StatFS reports the host file system holding f.
func (f *File) StatFS() (p9.FSStat, error) {
	var s unix.Statfs_t
	if err := unix.Fstatfs(f.p, &s); err != nil {
		return p9.FSStat{}, err
	}
	return p9.FSStat{
		Type:            uint32(s.Type),
		BlockSize:       uint32(s.Bsize),
		Blocks:          s.Blocks,
		BlocksFree:      s.Bfree,
		BlocksAvailable: s.Bavail,
		Files:           s.Files,
		FilesFree:       s.Ffree,
		FSID:            uint64(uint32(s.Fsid.Val[0])) | uint64(uint32(s.Fsid.Val[1]))<<32,
		NameLength:      uint32(s.Namelen),
	}, nil
}

// attrMask is what GetAttr fills.
var attrMask = p9.AttrMask{
	Mode: true, NLink: true, UID: true, GID: true, RDev: true,
	ATime: true, MTime: true, CTime: true, INo: true, Size: true, Blocks: true,
}

// GetAttr stats f now.
func (f *File) GetAttr(p9.AttrMask) (p9.QID, p9.AttrMask, p9.Attr, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.p, &st); err != nil {
		return p9.QID{}, p9.AttrMask{}, p9.Attr{}, err
	}
	a := p9.Attr{
		Mode:             p9.FileMode(st.Mode),
		UID:              p9.UID(st.Uid),
		GID:              p9.GID(st.Gid),
		NLink:            p9.NLink(st.Nlink),
		RDev:             p9.Dev(st.Rdev),
		Size:             uint64(st.Size),
		BlockSize:        uint64(st.Blksize),
		Blocks:           uint64(st.Blocks),
		ATimeSeconds:     uint64(st.Atim.Sec),
		ATimeNanoSeconds: uint64(st.Atim.Nsec),
		MTimeSeconds:     uint64(st.Mtim.Sec),
		MTimeNanoSeconds: uint64(st.Mtim.Nsec),
		CTimeSeconds:     uint64(st.Ctim.Sec),
		CTimeNanoSeconds: uint64(st.Ctim.Nsec),
	}
	return f.fs.qid(&st), attrMask, a, nil
}

// modeMask is what the guest may set in a file's mode: permissions and
// the sticky bit, never set-user-ID or set-group-ID (a root VMM would
// otherwise let the guest plant set-user-ID root programs on the host).
const modeMask = 0o1777

// SetAttr changes mode, owner (only to the server's own user and groups),
// size and times.
func (f *File) SetAttr(valid p9.SetAttrMask, attr p9.SetAttr) error {
	if f.fs.readOnly {
		return unix.EROFS
	}
	if valid == (p9.SetAttrMask{}) {
		return nil
	}
	if f.empty {
		return unix.EACCES
	}
	if f.isSymlink() {
		// The /proc path of a link's O_PATH descriptor is not safe to
		// hand to path-based calls; Linux has no link modes anyway.
		return unix.EOPNOTSUPP
	}
	path := procPath(f.p)
	if valid.Permissions {
		if err := unix.Fchmodat(unix.AT_FDCWD, path, uint32(attr.Permissions)&modeMask, 0); err != nil {
			return err
		}
	}
	if valid.UID || valid.GID {
		uid, gid := -1, -1
		if valid.UID && attr.UID.Ok() {
			uid = int(attr.UID)
			if uid != unix.Geteuid() {
				return unix.EPERM
			}
		}
		if valid.GID && attr.GID.Ok() {
			gid = int(attr.GID)
			if !inGroup(gid) {
				return unix.EPERM
			}
		}
		if err := unix.Fchownat(unix.AT_FDCWD, path, uid, gid, 0); err != nil {
			return err
		}
	}
	if valid.Size {
		if attr.Size > math.MaxInt64 {
			return unix.EFBIG
		}
		if err := unix.Truncate(path, int64(attr.Size)); err != nil {
			return err
		}
	}
	if valid.ATime || valid.MTime {
		ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if valid.ATime {
			ts[0] = timeSpec(valid.ATimeNotSystemTime, attr.ATimeSeconds, attr.ATimeNanoSeconds)
		}
		if valid.MTime {
			ts[1] = timeSpec(valid.MTimeNotSystemTime, attr.MTimeSeconds, attr.MTimeNanoSeconds)
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, path, ts[:], 0); err != nil {
			return err
		}
	}
	return nil
}

// timeSpec is the given time, or now when the guest did not give one.
func timeSpec(given bool, sec, nsec uint64) unix.Timespec {
	if !given {
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	if sec > math.MaxInt64 || nsec >= 1e9 {
		return unix.Timespec{Sec: -1, Nsec: -1} // EINVAL from the kernel
	}
	return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// inGroup reports whether the process may give files group gid.
func inGroup(gid int) bool {
	if gid == unix.Getegid() {
		return true
	}
	groups, err := unix.Getgroups()
	return err == nil && slices.Contains(groups, gid)
}

// Close releases f's descriptors.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	if f.open >= 0 {
		unix.Close(f.open)
		f.open = -1
	}
	err := unix.Close(f.p)
	f.fs.files.Add(-1)
	return err
}

// Linux open flags the 9P2000.L client passes that the server honours
// (the dotl values equal x86 Linux's).
const (
	dotlTrunc = unix.O_TRUNC
	dotlExcl  = unix.O_EXCL
)

// accessFlags maps the access mode of a 9P open, refusing writes to a
// read-only share.
func (f *File) accessFlags(mode p9.OpenFlags) (int, error) {
	var flags int
	switch mode.Mode() {
	case p9.ReadOnly:
		flags = unix.O_RDONLY
	case p9.WriteOnly:
		flags = unix.O_WRONLY
	case p9.ReadWrite:
		flags = unix.O_RDWR
	default:
		return 0, unix.EINVAL
	}
	if mode&dotlTrunc != 0 {
		flags |= unix.O_TRUNC
	}
	if f.fs.readOnly && flags != unix.O_RDONLY {
		return 0, unix.EROFS
	}
	return flags, nil
}

// Open opens the inode f walked to: a directory for reading, or a regular
// file. Anything else (device, FIFO, socket, symbolic link) is EPERM.
func (f *File) Open(mode p9.OpenFlags) (p9.QID, uint32, error) {
	var flags int
	switch {
	case f.isDir():
		if mode.Mode() != p9.ReadOnly {
			return p9.QID{}, 0, unix.EISDIR
		}
		flags = unix.O_RDONLY | unix.O_DIRECTORY
	case f.isReg():
		var err error
		if flags, err = f.accessFlags(mode); err != nil {
			return p9.QID{}, 0, err
		}
	default:
		return p9.QID{}, 0, unix.EPERM
	}
	// Re-open the inode itself, not its name: the name may have been
	// replaced (by a symbolic link, say) since the walk. The kernel checks
	// the process's rights as for any open.
	fd, err := unix.Open(procPath(f.p), flags|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return p9.QID{}, 0, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != f.st.Dev || st.Ino != f.st.Ino {
		unix.Close(fd)
		return p9.QID{}, 0, unix.ESTALE
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open >= 0 || f.closed {
		unix.Close(fd)
		return p9.QID{}, 0, unix.EBADF
	}
	f.open = fd
	return f.fs.qid(&st), 0, nil
}

// fd returns the open descriptor, or EBADF.
func (f *File) fd() (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open < 0 {
		return -1, unix.EBADF
	}
	return f.open, nil
}

// ReadAt reads from the opened file. An offset that is a key from
// FS.StageRead reads into the staged buffers instead of p, and returns 0
// (see direct.go).
func (f *File) ReadAt(p []byte, offset int64) (int, error) {
	fd, err := f.fd()
	if err != nil {
		return 0, err
	}
	if uint64(offset)&stagedBit != 0 {
		return 0, f.fs.readStaged(fd, uint64(offset))
	}
	if offset < 0 {
		return 0, unix.EINVAL
	}
	n, err := unix.Pread(fd, p, offset)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// WriteAt writes to the opened file.
func (f *File) WriteAt(p []byte, offset int64) (int, error) {
	if f.fs.readOnly {
		return 0, unix.EROFS
	}
	fd, err := f.fd()
	if err != nil {
		return 0, err
	}
	if offset < 0 {
		return 0, unix.EINVAL
	}
	n, err := unix.Pwrite(fd, p, offset)
	if err != nil {
		return 0, err
	}
	return n, nil
}

// FSync flushes the opened file.
func (f *File) FSync() error {
	fd, err := f.fd()
	if err != nil {
		return err
	}
	return unix.Fsync(fd)
}

// SetXattr is not supported (nor allowed on a read-only share).
func (f *File) SetXattr(string, []byte, p9.XattrFlags) error {
	if f.fs.readOnly {
		return unix.EROFS
	}
	return unix.EOPNOTSUPP
}

// GetXattr is not supported: extended attributes are not shared.
func (f *File) GetXattr(string) ([]byte, error) { return nil, unix.EOPNOTSUPP }

// ListXattrs lists none.
func (f *File) ListXattrs() ([]string, error) { return nil, nil }

// RemoveXattr is not supported (nor allowed on a read-only share).
func (f *File) RemoveXattr(string) error {
	if f.fs.readOnly {
		return unix.EROFS
	}
	return unix.EOPNOTSUPP
}

// Lock grants every lock: locks are the guest's business (one guest per
// share), as with QEMU's default.
func (f *File) Lock(int, p9.LockType, p9.LockFlags, uint64, uint64, string) (p9.LockStatus, error) {
	return p9.LockStatusOK, nil
}

// mutable checks a directory operation creating or removing name.
func (f *File) mutable(name string) error {
	if f.fs.readOnly {
		return unix.EROFS
	}
	if err := checkName(name); err != nil {
		return err
	}
	if !f.isDir() {
		return unix.ENOTDIR
	}
	if f.empty {
		return unix.EACCES
	}
	return nil
}

// Create creates and opens a regular file name in directory f. It never
// opens an existing file (O_EXCL): the Linux client creates only names its
// lookup did not find, and an existing name could be a device or FIFO.
func (f *File) Create(name string, flags p9.OpenFlags, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.File, p9.QID, uint32, error) {
	if err := f.mutable(name); err != nil {
		return nil, p9.QID{}, 0, err
	}
	acc, err := f.accessFlags(flags)
	if err != nil {
		return nil, p9.QID{}, 0, err
	}
	if err := f.fs.reserve(); err != nil {
		return nil, p9.QID{}, 0, err
	}
	mode := uint32(perm) & modeMask
	fd, err := f.fs.openBeneath(f.p, name, acc|unix.O_CREAT|unix.O_EXCL, mode)
	if err != nil {
		f.fs.files.Add(-1)
		return nil, p9.QID{}, 0, err
	}
	// The guest applied its umask already; undo the host's.
	if err := unix.Fchmod(fd, mode); err != nil {
		unix.Close(fd)
		f.fs.files.Add(-1)
		return nil, p9.QID{}, 0, err
	}
	pfd, err := unix.Open(procPath(fd), unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		f.fs.files.Add(-1)
		return nil, p9.QID{}, 0, err
	}
	nf, err := f.fs.newFile(pfd)
	if err != nil {
		unix.Close(fd)
		return nil, p9.QID{}, 0, err
	}
	nf.open = fd
	return nf, f.fs.qid(&nf.st), 0, nil
}

// lookup returns the QID of name below f, not following links.
func (f *File) lookup(name string) (p9.QID, *unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(f.p, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return p9.QID{}, nil, err
	}
	return f.fs.qid(&st), &st, nil
}

// Mkdir makes directory name in f.
func (f *File) Mkdir(name string, perm p9.FileMode, _ p9.UID, _ p9.GID) (p9.QID, error) {
	if err := f.mutable(name); err != nil {
		return p9.QID{}, err
	}
	mode := uint32(perm) & modeMask
	if err := unix.Mkdirat(f.p, name, mode); err != nil {
		return p9.QID{}, err
	}
	// Set the exact mode through a descriptor of the new directory, so a
	// name swapped for a link meanwhile is not followed.
	fd, err := f.fs.openBeneath(f.p, name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return p9.QID{}, err
	}
	defer unix.Close(fd)
	if err := unix.Fchmodat(unix.AT_FDCWD, procPath(fd), mode, 0); err != nil {
		return p9.QID{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return p9.QID{}, err
	}
	return f.fs.qid(&st), nil
}

// Symlink makes a symbolic link newName in f pointing at oldName (any
// text: it is never followed on the host).
func (f *File) Symlink(oldName, newName string, _ p9.UID, _ p9.GID) (p9.QID, error) {
	if err := f.mutable(newName); err != nil {
		return p9.QID{}, err
	}
	if err := unix.Symlinkat(oldName, f.p, newName); err != nil {
		return p9.QID{}, err
	}
	q, _, err := f.lookup(newName)
	return q, err
}

// Link makes newName in f a hard link to target, a regular file.
func (f *File) Link(target p9.File, newName string) error {
	if err := f.mutable(newName); err != nil {
		return err
	}
	t, ok := target.(*File)
	if !ok || t.fs != f.fs {
		return unix.EXDEV
	}
	if !t.isReg() {
		// Only regular files: linking through the /proc path of a
		// link's O_PATH descriptor could follow the link.
		return unix.EPERM
	}
	return unix.Linkat(unix.AT_FDCWD, procPath(t.p), f.p, newName, unix.AT_SYMLINK_FOLLOW)
}

// Mknod is refused: the share holds no device nodes, FIFOs or sockets
// made by the guest.
func (f *File) Mknod(name string, _ p9.FileMode, _, _ uint32, _ p9.UID, _ p9.GID) (p9.QID, error) {
	if err := f.mutable(name); err != nil {
		return p9.QID{}, err
	}
	return p9.QID{}, unix.EPERM
}

// Rename is not used: the server renames through the parent (RenameAt).
func (f *File) Rename(p9.File, string) error { return unix.EOPNOTSUPP }

// RenameAt renames oldName in f to newName in newDir.
func (f *File) RenameAt(oldName string, newDir p9.File, newName string) error {
	if err := f.mutable(oldName); err != nil {
		return err
	}
	nd, ok := newDir.(*File)
	if !ok || nd.fs != f.fs {
		return unix.EXDEV
	}
	if err := nd.mutable(newName); err != nil {
		return err
	}
	return unix.Renameat(f.p, oldName, nd.p, newName)
}

// UnlinkAt removes name from f (a directory with AT_REMOVEDIR).
func (f *File) UnlinkAt(name string, flags uint32) error {
	if err := f.mutable(name); err != nil {
		return err
	}
	if flags&^unix.AT_REMOVEDIR != 0 {
		return unix.EINVAL
	}
	return unix.Unlinkat(f.p, name, int(flags))
}

// Readlink returns a symbolic link's target.
func (f *File) Readlink() (string, error) {
	if !f.isSymlink() {
		return "", unix.EINVAL
	}
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(f.p, "", buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// Renamed is a no-op: Files hold descriptors, not paths.
func (f *File) Renamed(p9.File, string) {}

// Directory entry layout (struct linux_dirent64).
const (
	direntIno    = 0  // u64
	direntOff    = 8  // s64
	direntReclen = 16 // u16
	direntType   = 18 // u8
	direntName   = 19 // NUL-terminated
)

// maxDirentBuf bounds one getdents read; count from the guest is bounded
// by msize anyway.
const (
	minDirentBuf = 1024
	maxDirentBuf = 64 << 10
)

// Readdir returns the entries from offset (an offset a previous entry
// gave, or 0), about count bytes of them.
func (f *File) Readdir(offset uint64, count uint32) (p9.Dirents, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.open < 0 || !f.isDir() {
		return nil, unix.EBADF
	}
	if _, err := unix.Seek(f.open, int64(offset), 0); err != nil {
		return nil, err
	}
	size := min(max(int(count), minDirentBuf), maxDirentBuf)
	if cap(f.dirents) < size {
		f.dirents = make([]byte, size)
	}
	buf := f.dirents[:size]
	n, err := unix.Getdents(f.open, buf)
	if err != nil {
		return nil, err
	}
	ents := f.parseDirents(buf[:n])
	if f.empty {
		ents = slices.DeleteFunc(ents, func(d p9.Dirent) bool { return d.Name != "." && d.Name != ".." })
	}
	return ents, nil
}

// parseDirents decodes getdents64 output.
func (f *File) parseDirents(b []byte) p9.Dirents {
	var out p9.Dirents
	le := binary.LittleEndian
	for len(b) >= direntName {
		reclen := int(le.Uint16(b[direntReclen:]))
		if reclen < direntName || reclen > len(b) {
			break
		}
		rec := b[:reclen]
		b = b[reclen:]
		name := rec[direntName:]
		for i, c := range name {
			if c == 0 {
				name = name[:i]
				break
			}
		}
		typ := p9.TypeRegular
		switch rec[direntType] {
		case unix.DT_DIR:
			typ = p9.TypeDir
		case unix.DT_LNK:
			typ = p9.TypeSymlink
		}
		out = append(out, p9.Dirent{
			QID:    p9.QID{Type: typ, Path: f.fs.qidPath(f.st.Dev, le.Uint64(rec[direntIno:]))},
			Offset: le.Uint64(rec[direntOff:]),
			Type:   typ,
			Name:   string(name),
		})
	}
	return out
}
