// Package rootfs builds the small root file systems that Corral's end-to-end
// tests boot Linux with: an uncompressed newc initramfs and an ext4 image,
// both holding Debian's static busybox and a shell /init that reports every
// step on the console (lines starting with ConsolePrefix), runs a test
// script, and ends the VM.
package rootfs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
)

// DefaultBusybox is where Debian's busybox-static package installs busybox.
const DefaultBusybox = "/bin/busybox"

// ErrBusyboxMissing is returned when the busybox binary cannot be read.
var ErrBusyboxMissing = errors.New("rootfs: static busybox not found (apt-get install -y busybox-static)")

//go:embed files/init.sh
var initScript string

//go:embed files/udhcpc.script
var udhcpcScript string

// Applets returns the busybox applets linked into /bin of every root file system.
func Applets() []string {
	return []string{
		"[", "awk", "base64", "basename", "cat", "chmod", "cp", "cttyhack", "cut", "date",
		"dd", "df", "dmesg", "echo", "env", "false", "free", "grep", "halt", "head",
		"hexdump", "hostname", "ifconfig", "ip", "kill", "ln", "ls", "md5sum", "mkdir",
		"mknod", "mount", "mv", "nc", "nproc", "od", "ping", "poweroff", "printf", "ps",
		"reboot", "rm", "route", "sed", "seq", "setsid", "sh", "sha256sum", "sleep",
		"stat", "sync", "tail", "test", "timeout", "touch", "tr", "true", "udhcpc",
		"umount", "uname", "uptime", "wc", "wget", "xargs",
	}
}

// ExitMethod says how /init ends the VM once the script is done.
type ExitMethod string

// The ways /init can end the VM.
const (
	// ExitPoweroff runs `poweroff -f` (ACPI S5 on Corral and QEMU).
	ExitPoweroff ExitMethod = "poweroff"
	// ExitReboot runs `reboot -f` (the kernel resets through the i8042 or ACPI).
	ExitReboot ExitMethod = "reboot"
	// ExitHalt runs `halt -f`: the VM stays up with halted CPUs.
	ExitHalt ExitMethod = "halt"
	// ExitPort writes the script's exit status (one byte) to the debug-exit
	// I/O port 0xf4 through /dev/port, then powers off if still running.
	ExitPort ExitMethod = "port"
)

// File is an extra file placed in the root file system.
type File struct {
	// Path is absolute inside the guest, e.g. "/etc/motd".
	Path string
	// Data is the file's contents.
	Data []byte
	// Mode holds the permission bits; zero means 0644.
	Mode fs.FileMode
}

// InitramfsOptions configures the root file system built by BuildInitramfs
// and BuildExt4.
type InitramfsOptions struct {
	// Busybox is the path of a static x86-64 busybox; empty means DefaultBusybox.
	Busybox string
	// Script is a shell script /init runs after setup (stored as
	// /etc/corral/script). A corral.script_b64= kernel parameter overrides it.
	Script string
	// Shell makes /init start an interactive shell on the console
	// (`setsid cttyhack sh`) instead of running the script.
	Shell bool
	// Exit says how /init ends the VM; empty means ExitPoweroff.
	Exit ExitMethod
	// NoDHCP stops /init from running udhcpc on interfaces that have no address.
	NoDHCP bool
	// Files are extra files; they may replace the built-in ones.
	Files []File
}

// entryKind tells what an entry of a tree is.
type entryKind int

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
	kindCharDev
)

// entry is one node of a root file system, independent of the image format.
type entry struct {
	path   string // absolute, cleaned
	kind   entryKind
	mode   fs.FileMode // permission bits
	data   []byte      // file contents
	target string      // symlink target
	major  uint32      // character device numbers
	minor  uint32
}

// buildTree returns the entries of the root file system described by opts,
// directories first and each parent before its children.
func buildTree(opts InitramfsOptions) ([]entry, error) {
	bbPath := opts.Busybox
	if bbPath == "" {
		bbPath = DefaultBusybox
	}
	busybox, err := os.ReadFile(bbPath)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBusyboxMissing, err)
	}
	if !bytes.HasPrefix(busybox, []byte("\x7fELF")) {
		return nil, fmt.Errorf("rootfs: %s is not an ELF file", bbPath)
	}
	exit := opts.Exit
	switch exit {
	case "":
		exit = ExitPoweroff
	case ExitPoweroff, ExitReboot, ExitHalt, ExitPort:
	default:
		return nil, fmt.Errorf("rootfs: unknown exit method %q", exit)
	}

	t := newTreeBuilder()
	for _, d := range []string{"/bin", "/dev", "/etc", "/etc/corral", "/mnt", "/proc", "/root", "/run", "/sys", "/tmp", "/usr", "/usr/share", "/usr/share/udhcpc"} {
		t.dir(d, 0o755)
	}
	t.setMode("/tmp", fs.ModeSticky|0o777)
	t.setMode("/root", 0o700)
	t.symlink("/sbin", "bin")
	t.symlink("/usr/bin", "../bin")
	t.symlink("/usr/sbin", "../bin")
	t.charDev("/dev/console", 0o600, 5, 1)
	t.charDev("/dev/null", 0o666, 1, 3)

	t.file("/bin/busybox", busybox, 0o755)
	for _, a := range Applets() {
		t.symlink("/bin/"+a, "busybox")
	}
	t.file("/init", []byte(initScript), 0o755)
	// An ext4 root is started through /sbin/init (= /bin/init) unless init= says otherwise.
	t.symlink("/bin/init", "../init")
	t.file("/usr/share/udhcpc/default.script", []byte(udhcpcScript), 0o755)
	// The root may be read-only (ext4 without `rw`); /run is a ramfs.
	t.symlink("/etc/resolv.conf", "../run/resolv.conf")
	t.file("/etc/hostname", []byte("corral\n"), 0o644)
	t.file("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
	t.file("/etc/group", []byte("root:x:0:\n"), 0o644)

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "# Written by tests/linux/rootfs; the kernel command line overrides it.\n")
	fmt.Fprintf(&cfg, "exit_method=%s\n", exit)
	fmt.Fprintf(&cfg, "shell=%d\n", boolInt(opts.Shell))
	fmt.Fprintf(&cfg, "dhcp=%d\n", boolInt(!opts.NoDHCP))
	t.file("/etc/corral/config", []byte(cfg.String()), 0o644)
	if opts.Script != "" {
		t.file("/etc/corral/script", []byte(opts.Script), 0o755)
	}

	for _, f := range opts.Files {
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		if err := t.userFile(f.Path, f.Data, mode); err != nil {
			return nil, err
		}
	}
	return t.entries(), nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// treeBuilder collects entries by path; later entries replace earlier ones.
type treeBuilder struct {
	byPath map[string]entry
}

func newTreeBuilder() *treeBuilder {
	return &treeBuilder{byPath: map[string]entry{"/": {path: "/", kind: kindDir, mode: 0o755}}}
}

func (t *treeBuilder) dir(p string, mode fs.FileMode) {
	t.byPath[p] = entry{path: p, kind: kindDir, mode: mode}
}

func (t *treeBuilder) setMode(p string, mode fs.FileMode) {
	e := t.byPath[p]
	e.mode = mode
	t.byPath[p] = e
}

func (t *treeBuilder) file(p string, data []byte, mode fs.FileMode) {
	t.byPath[p] = entry{path: p, kind: kindFile, mode: mode, data: data}
}

func (t *treeBuilder) symlink(p, target string) {
	t.byPath[p] = entry{path: p, kind: kindSymlink, mode: 0o777, target: target}
}

func (t *treeBuilder) charDev(p string, mode fs.FileMode, major, minor uint32) {
	t.byPath[p] = entry{path: p, kind: kindCharDev, mode: mode, major: major, minor: minor}
}

// userFile adds a caller's file, creating missing parent directories.
func (t *treeBuilder) userFile(p string, data []byte, mode fs.FileMode) error {
	if !path.IsAbs(p) {
		return fmt.Errorf("rootfs: file path %q is not absolute", p)
	}
	clean := path.Clean(p)
	if clean == "/" {
		return fmt.Errorf("rootfs: file path %q names the root directory", p)
	}
	for d := path.Dir(clean); d != "/"; d = path.Dir(d) {
		e, ok := t.byPath[d]
		switch {
		case !ok:
			t.dir(d, 0o755)
		case e.kind != kindDir:
			return fmt.Errorf("rootfs: cannot add %q: %q is not a directory", p, d)
		}
	}
	if e, ok := t.byPath[clean]; ok && e.kind == kindDir {
		return fmt.Errorf("rootfs: cannot add file %q: it is a directory", p)
	}
	t.file(clean, data, mode)
	return nil
}

// entries returns the tree sorted so that every parent precedes its children.
func (t *treeBuilder) entries() []entry {
	out := make([]entry, 0, len(t.byPath))
	for _, e := range t.byPath {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool {
		return pathLess(out[i].path, out[j].path)
	})
	return out
}

// pathLess orders paths component by component, so "/a" < "/a/b" < "/a-b".
func pathLess(a, b string) bool {
	ac := strings.Split(strings.TrimPrefix(a, "/"), "/")
	bc := strings.Split(strings.TrimPrefix(b, "/"), "/")
	if a == "/" {
		return b != "/"
	}
	if b == "/" {
		return false
	}
	for i := 0; i < len(ac) && i < len(bc); i++ {
		if ac[i] != bc[i] {
			return ac[i] < bc[i]
		}
	}
	return len(ac) < len(bc)
}
