package agent

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// StagingDir is where PID 1 mounts the root's layers before it switches
// into the overlay; it stays behind in the initramfs, out of the commands'
// sight.
const StagingDir = "/corral/mnt"

// mount is one file system PID 1 mounts.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
	what                   string // for errors: "9p share \"src\"", "the root's ext4 /dev/vda"
}

// baseMounts are the file systems every system needs, in mount order.
func baseMounts() []mount {
	return []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555, "proc"},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555, "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755, "devtmpfs"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666", 0o755, "devpts"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", os.ModeSticky | 0o777, "tmpfs"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", os.ModeSticky | 0o777, "tmpfs"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755, "tmpfs"},
	}
}

// GuestMounts are the directories where the agent mounts file systems of
// the guest's own (proc, sysfs, devtmpfs, tmpfs) over the root: with the
// host's root, what the host has under them is not what the guest sees.
func GuestMounts() []string {
	var dirs []string
	for _, m := range baseMounts() {
		dirs = append(dirs, m.target)
	}
	return dirs
}

// ninepOptions are the mount options of every 9p mount, the root's too. No
// cache=loose for the root: it keys inodes by QID, and a server that
// exports several host file systems (QEMU's without multidevs=remap)
// repeats QIDs, so /proc and /sys of the host's root became one directory
// and its mounts stacked (seen under QEMU). cache=mmap caches no more
// than cache=none (no dentries, attributes or read(2) data; new inodes
// per lookup), but Linux turns readahead off for cache=none (ra_pages 0
// in v9fs_fill_super): every page of an mmap'd executable or library was
// a 4 KiB Tread of its own, about 80 round trips to start `true` (a warm
// corral exec's largest part under TCG). It also allows writable shared
// mappings, written back on msync, munmap and sync. msize is virtio's
// largest in Linux 6.1 (PAGE_SIZE * (VIRTQUEUE_NUM - 3)): asking for more
// gets the same size and a "Limiting 'msize'" console line on every mount
// (about 150 UART exits, emulated ones under TCG).
const ninepOptions = "trans=virtio,version=9p2000.L,msize=512000,cache=mmap"

// SetupError is what went wrong while PID 1 set the system up. The agent
// still serves, but answers every command with it: a command must not run
// without the root or the shares it was promised. errors.Is sees each
// problem's errno.
type SetupError struct {
	Problems []error
}

// Error returns the problems on one line.
func (e *SetupError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Error()
	}
	return "guest setup: " + strings.Join(msgs, "; ")
}

// Unwrap returns the problems.
func (e *SetupError) Unwrap() []error { return e.Problems }

// sysOps are the system calls setup makes; tests record them or run them
// in a mount namespace of their own.
type sysOps interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	// Mkdir creates dir and its parents; with noLink the last element
	// must not be a symbolic link (a mount there would leave the new root).
	Mkdir(dir string, mode os.FileMode, noLink bool) error
	Chdir(dir string) error
	Chroot(dir string) error
	// XattrProbe sets and removes a trusted.* attribute on dir.
	XattrProbe(dir string) error
	// Opaque marks dir, in an overlay's upper layer, opaque: the overlay
	// does not look below it.
	Opaque(dir string) error
	Sethostname(name string) error
	ReadFile(name string) ([]byte, error)
}

type realOps struct{}

func (realOps) XattrProbe(dir string) error {
	if err := unix.Setxattr(dir, "trusted.corral.probe", []byte("1"), 0); err != nil {
		return err
	}
	return unix.Removexattr(dir, "trusted.corral.probe")
}

func (realOps) Opaque(dir string) error {
	return unix.Setxattr(dir, "trusted.overlay.opaque", []byte("y"), 0)
}

func (realOps) Mount(source, target, fstype string, flags uintptr, data string) error {
	return unix.Mount(source, target, fstype, flags, data)
}

func (realOps) Mkdir(dir string, mode os.FileMode, noLink bool) error {
	// A directory that is there (not a symbolic link) is the common case:
	// an O_PATH open is only the lookup, where MkdirAll's stat and the
	// Lstat each cost a 9P Tgetattr on the root's 9p lower layer (five
	// api mounts moved per root switch, two round trips each). Anything
	// else takes the full path below, with its errors.
	if fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
		unix.Close(fd)
		return nil
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	if noLink {
		if fi, err := os.Lstat(dir); err != nil {
			return err
		} else if !fi.IsDir() {
			return fmt.Errorf("%s is a %v, want a directory", dir, fi.Mode().Type())
		}
	}
	return nil
}

func (realOps) Chdir(dir string) error               { return unix.Chdir(dir) }
func (realOps) Chroot(dir string) error              { return unix.Chroot(dir) }
func (realOps) Sethostname(name string) error        { return unix.Sethostname([]byte(name)) }
func (realOps) ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }

// setup carries out PID 1's plan and collects its problems.
type setup struct {
	sys      sysOps
	log      *slog.Logger
	staging  string
	problems []error
	// deferred: a host's Setup request, which hears the outcome in its
	// Ack; what went well is then logged at debug level, not on the
	// console (each line there cost a restored warm exec tens of ms of
	// emulated UART under TCG). At boot the console is the only witness.
	deferred bool
	// overlay9p: the root switch mounted an overlay whose lower layer is
	// a 9p share and whose upper layer holds only the api mounts' opaque
	// mount points (see Deferred.pristineRoot).
	overlay9p bool
	// kernelRoot: the kernel mounted the 9p root as / and ran the agent
	// from it (KernelRootParams); the root switch binds it as the lower
	// layer instead of mounting the share.
	kernelRoot bool
}

// done logs a step that went well.
func (s *setup) done(msg string, args ...any) {
	if s.deferred {
		s.log.Debug(msg, args...)
		return
	}
	s.log.Info(msg, args...)
}

func (s *setup) fail(err error) { s.problems = append(s.problems, err) }

func (s *setup) err() error {
	if len(s.problems) == 0 {
		return nil
	}
	return &SetupError{Problems: s.problems}
}

// Init does what PID 1 must before serving: it mounts /proc, /sys, /dev
// (devtmpfs), /dev/pts, /dev/shm, /tmp and /run; switches into the root
// that corral.root= names (see SwitchRoot); mounts the 9p shares of
// corral.share= and the tmpfs of corral.tmpfs= in it; sets the host name
// of corral.hostname=; and sets PATH if the kernel gave none. A base file
// system that is already mounted is left alone. It returns a *SetupError
// listing every failure, with the kernel options a missing file system
// needs; what could be done stays done.
//
// On a kernel root (KernelRootParams: / is the 9p share the kernel
// mounted) it makes the same overlay root with that mount as the lower
// layer (initKernelRoot).
//
// With corral.setup=deferred it stops before the root switch and returns
// a *Deferred, which a Server (Config.Deferred) completes when the host
// sends Setup. Otherwise the *Deferred it returns is the setup done at
// boot, already applied: a Server refuses Setup but, as after a host's
// Setup, lets the first command use a path the host resolved when the
// root is an overlay over a 9p share. It is nil when the kernel command
// line could not be read (outside a kernel root).
func Init(log *slog.Logger) (*Deferred, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPath)
	}
	s := &setup{sys: realOps{}, log: log, staging: StagingDir}
	// /proc first: it tells whether the kernel mounted the root.
	all := baseMounts()
	api := s.baseMounts(all[:1])
	if rootIs9P() {
		s.staging = KernelRootStaging
		s.initKernelRoot(api, all[1:])
		return s.atBoot(), s.err()
	}
	api = append(api, s.baseMounts(all[1:])...)
	cfg, err := s.readCmdline()
	if err != nil {
		s.fail(err)
		return nil, s.err()
	}
	if cfg.Deferred {
		// Problems of the base mounts still refuse every command.
		return &Deferred{s: s, api: api, baseErr: s.err()}, s.err()
	}
	s.apply(cfg, api)
	return s.atBoot(), s.err()
}

// atBoot is the setup done at boot as an applied Deferred.
func (s *setup) atBoot() *Deferred {
	return &Deferred{s: s, applied: true, atBoot: true, err: s.err()}
}

// ErrSetupDone is returned by Deferred.Apply after the first Setup: the
// root switch and share mounts happen once.
var ErrSetupDone = errors.New("agent: setup was done already (a Setup request is taken once)")

// Deferred is the root switch and share mounts that PID 1, booted with
// corral.setup=deferred, leaves for the host's Setup request: done once,
// by the same code as at boot. Its methods are safe for concurrent use.
type Deferred struct {
	mu      sync.Mutex
	s       *setup
	api     []mount // what the root switch moves along
	baseErr error   // the base mounts' problems (a *SetupError)
	applied bool
	atBoot  bool  // set up at boot (Init without corral.setup=deferred): Setup is refused
	err     error // the setup's *SetupError, once applied
}

// Apply switches root and mounts the shares as cfg says (its Deferred is
// ignored), exactly once: later calls return ErrSetupDone. Its error is a
// *SetupError, as Init's, listing the base mounts' problems too; it then
// refuses every command (Status).
func (d *Deferred) Apply(cfg BootConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.applied {
		return ErrSetupDone
	}
	d.applied = true
	d.s.deferred = true
	d.s.apply(cfg, d.api)
	d.err = d.s.err()
	return d.err
}

// Status reports whether Apply ran, and the setup's problems: those of the
// base mounts from the start, Apply's after it.
func (d *Deferred) Status() (applied bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.applied {
		return false, d.baseErr
	}
	return true, d.err
}

// pristineRoot reports whether Apply succeeded and switched into an
// overlay over a 9p share: until a command runs, every path the guest
// sees there that no mount covers is the share's (the upper layer holds
// only the mount points the setup made), which lets the first command use
// a path the host resolved in the share (lookPath).
func (d *Deferred) pristineRoot() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applied && d.err == nil && d.s.overlay9p
}

// baseMounts mounts ms (baseMounts or its tail), linking /dev/ptmx to
// devpts's when /dev has none, and returns the top-level directories that
// hold a mount afterwards: what a root switch moves along.
func (s *setup) baseMounts(ms []mount) (api []mount) {
	for _, m := range ms {
		err := s.mount(m)
		if errors.Is(err, unix.EBUSY) {
			err = nil // already mounted (the kernel's DEVTMPFS_MOUNT, or a second run)
		}
		if err != nil {
			s.fail(err)
			continue
		}
		if m.fstype == "devpts" {
			// A devtmpfs may lack /dev/ptmx; the devpts one serves.
			if _, err := os.Lstat("/dev/ptmx"); errors.Is(err, os.ErrNotExist) {
				os.Symlink("pts/ptmx", "/dev/ptmx")
			}
		}
		if path.Dir(m.target) == "/" {
			api = append(api, m)
		}
	}
	return api
}

// tmpfsOptions are a corral.tmpfs= mount's: writable by every user with
// the sticky bit, as /tmp, since the command may not run as root.
const tmpfsOptions = "mode=1777"

// apply sets the host name, switches root as cfg says, moving the api
// mounts along, then mounts the shares and tmpfs in the new root.
func (s *setup) apply(cfg BootConfig, api []mount) {
	if cfg.Hostname != "" {
		if err := s.sys.Sethostname(cfg.Hostname); err != nil {
			s.fail(fmt.Errorf("setting the host name %q: %w", cfg.Hostname, err))
		}
	}
	if cfg.Root.Kind != RootInitramfs {
		if err := s.switchRoot(cfg.Root, api); err != nil {
			s.fail(err)
		} else {
			s.done("agent: switched root", "root", cfg.Root.String())
		}
	}
	var mounts []mount
	for _, sh := range cfg.Shares {
		m := mount{source: sh.Tag, target: sh.Path, fstype: "9p", data: ninepOptions, mode: 0o755, what: fmt.Sprintf("9p share %q", sh.Tag)}
		if sh.ReadOnly {
			m.flags |= unix.MS_RDONLY
		}
		mounts = append(mounts, m)
	}
	for _, p := range cfg.Tmpfs {
		mounts = append(mounts, mount{source: "tmpfs", target: p, fstype: "tmpfs", flags: unix.MS_NOSUID | unix.MS_NODEV,
			data: tmpfsOptions, mode: 0o755, what: "tmpfs"})
	}
	// Parents before children, so a mount at /a does not hide one at
	// /a/b; at one depth, shares before tmpfs.
	slices.SortStableFunc(mounts, func(a, b mount) int {
		return cmp.Compare(strings.Count(a.target, "/"), strings.Count(b.target, "/"))
	})
	for _, m := range mounts {
		if err := s.mount(m); err != nil {
			s.fail(err)
			continue
		}
		if m.fstype == "tmpfs" {
			s.done("agent: mounted tmpfs", "path", m.target)
		} else {
			s.done("agent: mounted share", "tag", m.source, "path", m.target, "ro", m.flags&unix.MS_RDONLY != 0)
		}
	}
}

// switchRoot makes root the system's root, as switch_root(8) does from an
// initramfs: root's device read-only as the lower layer, a tmpfs upper, an
// overlay of both (a Writable root is mounted read-write as it is,
// without them); the api mounts (/dev, /proc...) move into it, the new
// root moves onto / and the agent chroots into it and changes to /.
// The initramfs stays, hidden; commands start in the new root.
func (s *setup) switchRoot(root Root, api []mount) error {
	lower, rw, newRoot := s.staging+"/lower", s.staging+"/rw", s.staging+"/root"
	if root.Writable {
		if root.Kind != Root9P {
			return fmt.Errorf("switching root: a writable root must be a 9p share, not %s", root)
		}
		if err := s.mount(mount{source: root.Source, target: newRoot, fstype: "9p", data: ninepOptions, mode: 0o755, what: fmt.Sprintf("the root's 9p share %q (read-write)", root.Source)}); err != nil {
			return err
		}
		return s.enterRoot(newRoot, api)
	}
	var lm mount
	switch {
	case s.kernelRoot:
		// Not recursive: the staging tmpfs on the root's /tmp stays out.
		lm = mount{source: "/", target: lower, flags: unix.MS_BIND, mode: 0o755, what: fmt.Sprintf("the kernel's 9p root %q (bound)", root.Source)}
	case root.Kind == Root9P:
		lm = mount{source: root.Source, target: lower, fstype: "9p", flags: unix.MS_RDONLY, data: ninepOptions, mode: 0o755, what: fmt.Sprintf("the root's 9p share %q", root.Source)}
	case root.Kind == RootBlock:
		lm = mount{source: root.Source, target: lower, fstype: "ext4", flags: unix.MS_RDONLY, mode: 0o755, what: "the root's ext4 " + root.Source}
	default:
		return fmt.Errorf("switching root: unknown root kind %d", root.Kind)
	}
	if err := s.mount(lm); err != nil {
		return err
	}
	if err := s.mount(mount{source: "tmpfs", target: rw, fstype: "tmpfs", data: "mode=0755", mode: 0o755, what: "the root's writable layer (tmpfs)"}); err != nil {
		return err
	}
	for _, d := range []string{rw + "/upper", rw + "/work"} {
		if err := s.sys.Mkdir(d, 0o755, false); err != nil {
			return fmt.Errorf("switching root: %w", err)
		}
	}
	if err := s.sys.XattrProbe(rw + "/upper"); errors.Is(err, unix.EOPNOTSUPP) {
		// The overlay works, but cannot mark directories opaque.
		s.log.Warn("agent: the root's tmpfs has no trusted.* xattrs (kernel needs CONFIG_TMPFS_XATTR): re-creating a directory of the lower layer after removing it fails with EIO")
	} else if err == nil {
		// The api mounts' mount points are opaque directories of the
		// upper layer, so the overlay never looks them up in the lower
		// one, whose content there the mounts hide anyway: on a 9p
		// lower layer each lookup was a Twalk and a Tgetattr, 10 round
		// trips per root switch. A host whose /tmp or /run is a
		// symbolic link no longer fails the switch. All of them, not
		// only api: on a kernel root the others are mounted after it.
		for _, m := range baseMounts() {
			if path.Dir(m.target) != "/" {
				continue
			}
			d := rw + "/upper" + m.target
			if err := s.sys.Mkdir(d, m.mode, true); err != nil {
				return fmt.Errorf("switching root: %w", err)
			}
			if err := s.sys.Opaque(d); err != nil {
				return fmt.Errorf("switching root: marking %s opaque: %w", d, err)
			}
		}
	}
	ov := mount{source: "overlay", target: newRoot, fstype: "overlay", mode: 0o755, what: "the root's overlay",
		data: "lowerdir=" + lower + ",upperdir=" + rw + "/upper,workdir=" + rw + "/work"}
	if err := s.mount(ov); err != nil {
		return err
	}
	if err := s.enterRoot(newRoot, api); err != nil {
		return err
	}
	s.overlay9p = root.Kind == Root9P
	return nil
}

// enterRoot moves the api mounts into newRoot, newRoot onto / and
// chroots there.
func (s *setup) enterRoot(newRoot string, api []mount) error {
	for _, m := range api {
		d := m.target
		if err := s.sys.Mkdir(newRoot+d, m.mode, true); err != nil {
			return fmt.Errorf("switching root: moving %s: %w", d, err)
		}
		if err := s.sys.Mount(d, newRoot+d, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switching root: moving %s into the new root: %w", d, err)
		}
	}
	if err := s.sys.Chdir(newRoot); err != nil {
		return fmt.Errorf("switching root: chdir %s: %w", newRoot, err)
	}
	if err := s.sys.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switching root: moving %s onto /: %w", newRoot, err)
	}
	if err := s.sys.Chroot("."); err != nil {
		return fmt.Errorf("switching root: chroot: %w", err)
	}
	if err := s.sys.Chdir("/"); err != nil {
		return fmt.Errorf("switching root: chdir /: %w", err)
	}
	return nil
}

// mount creates m's mount point and mounts m; its error names what and
// where, and the kernel option that is likely missing.
func (s *setup) mount(m mount) error {
	if err := s.sys.Mkdir(m.target, m.mode, false); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", m.what, m.target, err)
	}
	if err := s.sys.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
		return &MountError{What: m.what, Target: m.target, Err: err, Hint: mountHint(m, err)}
	}
	return nil
}

// MountError is a mount that failed, with a hint at the cause (the kernel
// options a missing file system needs).
type MountError struct {
	What, Target string
	Err          error
	Hint         string
}

func (e *MountError) Error() string {
	msg := fmt.Sprintf("mounting %s on %s: %v", e.What, e.Target, e.Err)
	if e.Hint != "" {
		msg += " (" + e.Hint + ")"
	}
	return msg
}

// Unwrap returns the errno.
func (e *MountError) Unwrap() error { return e.Err }

// mountHint explains what the errno of a failed mount of m most likely
// means: mount(2) says ENODEV for a file system type the kernel lacks.
func mountHint(m mount, err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	if errno == unix.ENODEV {
		if opts := fsOptions(m.fstype); opts != "" {
			return "kernel needs " + opts
		}
		return ""
	}
	switch m.fstype {
	case "9p":
		switch errno {
		case unix.EPROTONOSUPPORT: // p9_client_create finds no "virtio" transport
			return "kernel needs CONFIG_NET_9P_VIRTIO"
		case unix.ENOENT: // p9_virtio_create finds no device with the tag
			return fmt.Sprintf("no virtio-9p device has mount tag %q: the host must share a directory with that tag, and the kernel needs CONFIG_NET_9P_VIRTIO", m.source)
		case unix.EBUSY:
			return fmt.Sprintf("mount tag %q is mounted already: a virtio-9p device serves one mount", m.source)
		}
	case "ext4":
		switch errno {
		case unix.ENOENT, unix.ENXIO:
			return fmt.Sprintf("no block device %s: the host must attach the disk, and the kernel needs CONFIG_VIRTIO_BLK", m.source)
		case unix.ENOTBLK:
			return m.source + " is not a block device"
		case unix.EINVAL:
			return m.source + " holds no ext4 file system"
		case unix.EROFS:
			return m.source + " is read-only and its journal needs recovery: run e2fsck -fy on the image"
		}
	case "overlay":
		if errno == unix.EINVAL {
			return "overlayfs refused its layers: see the kernel log (dmesg)"
		}
	}
	return ""
}

// fsOptions returns the kernel options file system type fstype needs.
func fsOptions(fstype string) string {
	switch fstype {
	case "proc":
		return "CONFIG_PROC_FS"
	case "sysfs":
		return "CONFIG_SYSFS"
	case "devtmpfs":
		return "CONFIG_DEVTMPFS"
	case "devpts":
		return "CONFIG_UNIX98_PTYS"
	case "tmpfs":
		return "CONFIG_SHMEM and CONFIG_TMPFS"
	case "9p":
		return "CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS"
	case "ext4":
		return "CONFIG_EXT4_FS"
	case "overlay":
		return "CONFIG_OVERLAY_FS"
	}
	return ""
}

// PowerOff syncs the file systems and powers the machine off; only PID 1
// may call it.
func PowerOff() error {
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		return fmt.Errorf("agent: reboot(POWER_OFF): %w", err)
	}
	return nil
}
