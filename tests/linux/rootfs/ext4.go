package rootfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrMkfsMissing is returned when mkfs.ext4 (Debian package e2fsprogs) is not installed.
var ErrMkfsMissing = errors.New("rootfs: mkfs.ext4 not found (apt-get install -y e2fsprogs)")

// Ext4Label is the file-system label of images made by BuildExt4.
const Ext4Label = "corral-root"

// BuildExt4 writes an ext4 image of sizeMiB MiB to path (replacing it) with
// the same busybox, /init and settings as BuildInitramfs, for booting with
// the root on virtio-blk (root=/dev/vda rw). Device nodes are left out: the
// kernel mounts devtmpfs on /dev before it starts init. The kernel runs
// /sbin/init, which links to /init. No root privileges are needed.
func BuildExt4(path string, sizeMiB int, opts InitramfsOptions) error {
	entries, err := buildTree(opts)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "corral-rootfs-")
	if err != nil {
		return fmt.Errorf("rootfs: temporary directory for ext4 tree: %w", err)
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	if err := writeTree(root, entries); err != nil {
		return err
	}
	return BuildExt4FromDir(path, sizeMiB, root)
}

// BuildExt4FromDir writes an ext4 image of sizeMiB MiB to path (replacing it)
// holding a copy of the directory tree srcDir, using `mkfs.ext4 -d`.
func BuildExt4FromDir(path string, sizeMiB int, srcDir string) error {
	if sizeMiB <= 0 || sizeMiB > 1<<20 {
		return fmt.Errorf("rootfs: ext4 image size %d MiB out of range (1..%d)", sizeMiB, 1<<20)
	}
	st, err := os.Stat(srcDir)
	if err != nil {
		return fmt.Errorf("rootfs: ext4 source: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("rootfs: ext4 source %s is not a directory", srcDir)
	}
	mkfs, err := findMkfsExt4()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("rootfs: creating ext4 image: %w", err)
	}
	err = f.Truncate(int64(sizeMiB) << 20)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("rootfs: sizing ext4 image %s to %d MiB: %w", path, sizeMiB, err)
	}
	cmd := exec.Command(mkfs, "-q", "-F", "-t", "ext4", "-L", Ext4Label,
		"-E", "root_owner=0:0", "-d", srcDir, path)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("rootfs: %s -d %s %s: %w: %s", mkfs, srcDir, path, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

// findMkfsExt4 finds mkfs.ext4 on PATH or in the sbin directories that a
// non-root PATH often lacks.
func findMkfsExt4() (string, error) {
	if p, err := exec.LookPath("mkfs.ext4"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"} {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", ErrMkfsMissing
}

// writeTree materializes entries under root; character devices are skipped.
func writeTree(root string, entries []entry) error {
	for _, e := range entries {
		dst := filepath.Join(root, filepath.FromSlash(e.path))
		var err error
		switch e.kind {
		case kindDir:
			if err = os.MkdirAll(dst, 0o755); err == nil {
				err = os.Chmod(dst, fileMode(e.mode))
			}
		case kindFile:
			if err = os.WriteFile(dst, e.data, 0o600); err == nil {
				err = os.Chmod(dst, fileMode(e.mode))
			}
		case kindSymlink:
			err = os.Symlink(e.target, dst)
		case kindCharDev:
			continue
		default:
			err = fmt.Errorf("unknown kind %d", e.kind)
		}
		if err != nil {
			return fmt.Errorf("rootfs: writing ext4 tree entry %s: %w", e.path, err)
		}
	}
	return nil
}

// fileMode keeps the permission and sticky bits that os.Chmod understands.
func fileMode(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSticky)
}
