package corral

import (
	"fmt"
	"os"
	"strings"

	"github.com/corral-vmm/corral/virtio/virtio9p"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// Share is a host directory served to the guest over virtio-9p
// (9P2000.L). The guest mounts it by tag: mount -t 9p -o trans=virtio TAG
// DIR, or with corral.share=TAG:DIR[:ro] on the command line of a guest
// running the Corral agent. The guest cannot leave the directory: symbolic
// links are never followed on the host, and only regular files and
// directories are opened (see virtio/virtio9p/hostfs).
type Share struct {
	// Path is the host directory (symbolic links to it are followed once,
	// when the machine is created).
	Path string
	// Tag names the share for the guest: 1..31 bytes of [A-Za-z0-9._-],
	// unique in the machine.
	Tag string
	// ReadOnly refuses every change the guest asks for (EROFS).
	ReadOnly bool
	// Empty lists directories in the share ("/proc", "/tmp") that the
	// guest sees empty and cannot change: where it mounts file systems
	// of its own, so that a shared host "/" does not hand it the host's
	// /proc or /sys (see hostfs.Options.Empty).
	Empty []string
}

// ParseShare parses the CLI form PATH:TAG[,ro] (",rw" is the default).
// The tag is what follows the last ':', so PATH may hold ':' itself.
func ParseShare(s string) (Share, error) {
	var sh Share
	rest := s
	if head, opt, ok := cutLast(s, ","); ok && (opt == "ro" || opt == "rw") {
		rest, sh.ReadOnly = head, opt == "ro"
	}
	path, tag, ok := cutLast(rest, ":")
	if !ok || path == "" {
		return Share{}, fmt.Errorf("share %q: want PATH:TAG[,ro]", s)
	}
	if err := sharetag.Check(tag); err != nil {
		return Share{}, fmt.Errorf("share %q: %v (want PATH:TAG[,ro])", s, err)
	}
	sh.Path, sh.Tag = path, tag
	return sh, nil
}

// cutLast is strings.Cut at the last sep.
func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// checkShares reports a share whose directory is missing or not a
// directory, a bad tag, or a tag used twice.
func checkShares(shares []Share) error {
	seen := make(map[string]int, len(shares))
	for i, s := range shares {
		if err := sharetag.Check(s.Tag); err != nil {
			return fmt.Errorf("share %d: %v", i, err)
		}
		if j, dup := seen[s.Tag]; dup {
			return fmt.Errorf("share %d: tag %q is share %d's too", i, s.Tag, j)
		}
		seen[s.Tag] = i
		if s.Path == "" {
			return fmt.Errorf("share %d (%s): no path", i, s.Tag)
		}
		st, err := os.Stat(s.Path)
		if err != nil {
			return fmt.Errorf("share %d (%s): %w", i, s.Tag, err)
		}
		if !st.IsDir() {
			return fmt.Errorf("share %d (%s): %q is not a directory", i, s.Tag, s.Path)
		}
	}
	return nil
}

// createShares opens each shared directory and puts its virtio-9p device
// on the PCI bus, after the NICs and the vsock device. The device owns
// the directory's descriptors from then on: closing the machine's virtio
// functions closes them.
func (m *Machine) createShares() error {
	for i, s := range m.cfg.Shares {
		fs, err := hostfs.New(s.Path, hostfs.Options{ReadOnly: s.ReadOnly, Empty: s.Empty})
		if err != nil {
			return fmt.Errorf("corral: share %d (%s): %w", i, s.Tag, err)
		}
		dev, err := virtio9p.New(virtio9p.Config{Tag: s.Tag, FS: fs, Logger: m.log.With("device", "share "+s.Tag)})
		if err != nil {
			fs.Close()
			return fmt.Errorf("corral: share %d (%s): %w", i, s.Tag, err)
		}
		if err := m.addVirtio("virtio-9p "+s.Tag, dev); err != nil {
			return err
		}
		m.log.Info("vm.share", "id", m.id, "tag", s.Tag, "path", s.Path, "ro", s.ReadOnly)
	}
	return nil
}
