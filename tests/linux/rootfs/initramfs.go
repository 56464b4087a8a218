package rootfs

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// BuildInitramfs writes an uncompressed newc cpio archive holding busybox,
// its applet links, /dev/console and the Corral /init to w. The kernel
// unpacks it as its initial root and runs /init.
func BuildInitramfs(w io.Writer, opts InitramfsOptions) error {
	entries, err := buildTree(opts)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	rw := cpio.Newc.Writer(bw)
	for i, e := range entries {
		rec, err := cpioRecord(e)
		if err != nil {
			return err
		}
		// Distinct inode numbers keep cpio tools from taking files for hard links.
		rec.Ino = uint64(i + 1)
		rec.NLink = 1
		if e.kind == kindDir {
			rec.NLink = 2
		}
		if err := rw.WriteRecord(rec); err != nil {
			return fmt.Errorf("rootfs: writing initramfs record %s: %w", e.path, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("rootfs: writing initramfs trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("rootfs: writing initramfs: %w", err)
	}
	return nil
}

// cpioRecord converts a tree entry to a cpio record; names have no leading slash.
func cpioRecord(e entry) (cpio.Record, error) {
	name := strings.TrimPrefix(e.path, "/")
	if name == "" {
		name = "."
	}
	perm := uint64(e.mode.Perm())
	if e.mode&fs.ModeSticky != 0 {
		perm |= cpio.S_ISVTX
	}
	switch e.kind {
	case kindDir:
		return cpio.Directory(name, perm), nil
	case kindFile:
		return cpio.StaticRecord(e.data, cpio.Info{Name: name, Mode: cpio.S_IFREG | perm}), nil
	case kindSymlink:
		return cpio.Symlink(name, e.target), nil
	case kindCharDev:
		return cpio.CharDev(name, perm, uint64(e.major), uint64(e.minor)), nil
	}
	return cpio.Record{}, fmt.Errorf("rootfs: entry %s has unknown kind %d", e.path, e.kind)
}
