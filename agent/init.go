package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// SharePrefix opens a kernel command-line parameter naming a 9p share:
// corral.share=TAG:PATH[:ro] mounts the virtio-9p device with mount tag TAG
// at PATH, read-only with ":ro".
const SharePrefix = "corral.share="

// Share is a 9p share to mount.
type Share struct {
	Tag      string
	Path     string
	ReadOnly bool
}

// ParseShares returns the shares named on a kernel command line. Tags
// follow sharetag.Check (1..31 bytes of [A-Za-z0-9._-]), as the host's
// Config.Shares do; paths are absolute.
func ParseShares(cmdline string) ([]Share, error) {
	var shares []Share
	for _, field := range strings.Fields(cmdline) {
		v, ok := strings.CutPrefix(field, SharePrefix)
		if !ok {
			continue
		}
		tag, rest, ok := strings.Cut(v, ":")
		if !ok {
			return nil, fmt.Errorf("agent: %s%s: want TAG:PATH[:ro]", SharePrefix, v)
		}
		s := Share{Tag: tag, Path: rest}
		if p, ok := strings.CutSuffix(rest, ":ro"); ok {
			s.Path, s.ReadOnly = p, true
		}
		if err := sharetag.Check(tag); err != nil { // the host's rule too
			return nil, fmt.Errorf("agent: %s%s: %w", SharePrefix, v, err)
		}
		if !filepath.IsAbs(s.Path) || strings.Contains(s.Path, ":") {
			return nil, fmt.Errorf("agent: %s%s: path %q, want an absolute path without ':'", SharePrefix, v, s.Path)
		}
		s.Path = filepath.Clean(s.Path)
		shares = append(shares, s)
	}
	return shares, nil
}

// mount is one file system PID 1 mounts.
type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	mode                   os.FileMode
}

// baseMounts are the file systems every system needs, in mount order.
func baseMounts() []mount {
	return []mount{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "mode=0620,ptmxmode=0666", 0o755},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", 0o755},
	}
}

// Init does what PID 1 must before serving: it mounts /proc, /sys, /dev
// (devtmpfs), /dev/pts, /dev/shm, /tmp and /run, then the 9p shares named
// on the kernel command line, and sets PATH if the kernel gave none. A file
// system that is already mounted is left alone. It returns every failure
// joined; what could be mounted stays mounted.
func Init(log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", defaultPath)
	}
	var errs []error
	for _, m := range baseMounts() {
		if err := doMount(m); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := os.Lstat("/dev/ptmx"); errors.Is(err, os.ErrNotExist) {
		os.Symlink("pts/ptmx", "/dev/ptmx")
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("agent: reading the kernel command line: %w", err))...)
	}
	shares, err := ParseShares(string(cmdline))
	if err != nil {
		errs = append(errs, err)
	}
	for _, s := range shares {
		m := mount{source: s.Tag, target: s.Path, fstype: "9p", data: "trans=virtio,version=9p2000.L,msize=524288", mode: 0o755}
		if s.ReadOnly {
			m.flags |= unix.MS_RDONLY
		}
		if err := doMount(m); err != nil {
			errs = append(errs, err)
			continue
		}
		log.Info("agent: mounted share", "tag", s.Tag, "path", s.Path, "ro", s.ReadOnly)
	}
	return errors.Join(errs...)
}

func doMount(m mount) error {
	if err := os.MkdirAll(m.target, m.mode); err != nil {
		return fmt.Errorf("agent: mount %s on %s: %w", m.fstype, m.target, err)
	}
	err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data)
	if err == unix.EBUSY {
		return nil // already mounted (the kernel's DEVTMPFS_MOUNT, or a second run)
	}
	if err != nil {
		return fmt.Errorf("agent: mount %s %s on %s: %w", m.fstype, m.source, m.target, err)
	}
	return nil
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
