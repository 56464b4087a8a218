package agent

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/testenv"
)

// rootSwitchChild names the directory the child of
// TestRootSwitchInMountNamespace works in.
const rootSwitchChild = "CORRAL_AGENT_ROOTSWITCH_DIR"

// TestRootSwitchInMountNamespace runs the real root switch and share
// mounts in a child process with a mount namespace of its own, 9p replaced
// by bind mounts of host directories: after the switch a file of the lower
// layer is visible at /, a write lands in the tmpfs upper layer only, /proc
// and /dev came along, and the shares are at their paths (read-only ones
// refusing writes, nested ones not hidden).
func TestRootSwitchInMountNamespace(t *testing.T) {
	if dir := os.Getenv(rootSwitchChild); dir != "" {
		rootSwitchChildMain(t, dir, false)
		return
	}
	rootSwitchParent(t, "TestRootSwitchInMountNamespace")
}

// TestRootSwitchDeferredInMountNamespace is the same switch and mounts
// made by a Setup request (Deferred.Apply with SetupConfig's reading of
// the request) instead of the kernel command line.
func TestRootSwitchDeferredInMountNamespace(t *testing.T) {
	if dir := os.Getenv(rootSwitchChild); dir != "" {
		rootSwitchChildMain(t, dir, true)
		return
	}
	rootSwitchParent(t, "TestRootSwitchDeferredInMountNamespace")
}

// rootSwitchParent runs test in a child with a mount namespace of its own
// and checks what it did to the host's directories.
func rootSwitchParent(t *testing.T, test string) {
	testenv.MustHaveRoot(t)
	if fs, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(fs, []byte("\toverlay\n")) {
		testenv.Missing(t, testenv.Root, "needs overlayfs on the host (modprobe overlay)")
	}
	dir := t.TempDir()
	write := func(name, data string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("lower/hello.txt", "from lower\n")
	write("lower/mnt/keep", "")
	write("share-ro/ro.txt", "read only\n")
	write("share-deep/deep.txt", "deep\n")
	if err := os.MkdirAll(filepath.Join(dir, "share-rw"), 0o755); err != nil {
		t.Fatal(err)
	}
	runChild(t, test, rootSwitchChild+"="+dir, syscall.CLONE_NEWNS, "root switched")
	// The guest's writes: in the read-write share, nowhere in the lower
	// layer or the read-only share.
	if b, err := os.ReadFile(filepath.Join(dir, "share-rw/from-guest.txt")); err != nil || string(b) != "written in the guest\n" {
		t.Errorf("read-write share: %q, %v", b, err)
	}
	for _, name := range []string{"lower/new.txt", "share-ro/x"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s on the host: %v, want it missing", name, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "lower/hello.txt")); string(b) != "from lower\n" {
		t.Errorf("lower/hello.txt is now %q", b)
	}
}

// runChild runs test again in a child process with env added and new
// namespaces (cloneflags), where the child does the real mounts; it fails
// t unless the child passed and logged done, and checks that the host's
// mounts did not change.
func runChild(t *testing.T, test, env string, cloneflags uintptr, done string) {
	t.Helper()
	before, _ := os.ReadFile("/proc/self/mountinfo")
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags}
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !bytes.Contains(out, []byte(done)) {
		t.Fatal("the child did not get to the end")
	}
	after, _ := os.ReadFile("/proc/self/mountinfo")
	if !bytes.Equal(before, after) {
		t.Errorf("the host's mounts changed:\n%s\nthen:\n%s", before, after)
	}
}

// bindOps mounts "9p" tags as bind mounts of directories opened before the
// switch (through /proc/self/fd, which works from inside the new root).
type bindOps struct {
	realOps
	dirs map[string]*os.File
}

func (b bindOps) Mount(source, target, fstype string, flags uintptr, data string) error {
	if fstype != "9p" {
		return b.realOps.Mount(source, target, fstype, flags, data)
	}
	d, ok := b.dirs[source]
	if !ok {
		return unix.ENOENT // as virtio-9p says for an unknown tag
	}
	src := fmt.Sprintf("/proc/self/fd/%d", d.Fd())
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if flags&unix.MS_RDONLY != 0 {
		return unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, "")
	}
	return nil
}

func rootSwitchChildMain(t *testing.T, dir string, deferred bool) {
	// The namespace starts as a copy of the host's, shared mounts and all:
	// nothing below may propagate back.
	if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		t.Fatalf("making / private: %v", err)
	}
	ops := bindOps{dirs: map[string]*os.File{}}
	for tag, sub := range map[string]string{"rootfs": "lower", "rw": "share-rw", "ro": "share-ro", "deep": "share-deep"} {
		f, err := os.OpenFile(filepath.Join(dir, sub), unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		ops.dirs[tag] = f
	}
	staging := filepath.Join(dir, "staging")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	stagingDir, err := os.Open(staging)
	if err != nil {
		t.Fatal(err)
	}
	// The API file systems the host has mounted stand in for the guest's.
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var api []mount
	for _, m := range baseMounts() {
		if filepath.Dir(m.target) == "/" && bytes.Contains(mi, []byte(" "+m.target+" ")) {
			api = append(api, m)
		}
	}
	// "deep" first: setup must mount it after its parent "rw".
	cfg, err := ParseCmdline("console=ttyS0 corral.root=9p:rootfs corral.share=deep:/mnt/rw/deeper corral.share=rw:/mnt/rw corral.share=ro:/mnt/ro:ro")
	if err != nil {
		t.Fatal(err)
	}
	s := &setup{sys: ops, log: slog.New(slog.NewTextHandler(os.Stderr, nil)), staging: staging}
	if deferred {
		cfg, err = SetupConfig("9p:rootfs", []string{"deep:/mnt/rw/deeper", "rw:/mnt/rw", "ro:/mnt/ro:ro"})
		if err != nil {
			t.Fatal(err)
		}
		d := &Deferred{s: s, api: api}
		if applied, err := d.Status(); applied || err != nil {
			t.Fatalf("before Apply: applied %v, %v", applied, err)
		}
		if err := d.Apply(cfg); err != nil {
			t.Fatal(err)
		}
		if applied, err := d.Status(); !applied || err != nil {
			t.Fatalf("after Apply: applied %v, %v", applied, err)
		}
	} else {
		s.apply(cfg, api)
		if err := s.err(); err != nil {
			t.Fatal(err)
		}
	}
	if wd, err := os.Getwd(); err != nil || wd != "/" {
		t.Errorf("working directory %q, %v; want /", wd, err)
	}
	if b, err := os.ReadFile("/hello.txt"); err != nil || string(b) != "from lower\n" {
		t.Errorf("/hello.txt: %q, %v", b, err)
	}
	if err := os.WriteFile("/new.txt", []byte("upper\n"), 0o644); err != nil {
		t.Errorf("writing the new root: %v", err)
	}
	// The write is in the upper layer (the staging tmpfs, out of sight).
	if fd, err := unix.Openat(int(stagingDir.Fd()), "rw/upper/new.txt", unix.O_RDONLY, 0); err != nil {
		t.Errorf("new.txt not in the upper layer: %v", err)
	} else {
		unix.Close(fd)
	}
	// The api mounts sit on opaque directories of the upper layer.
	for _, m := range api {
		var v [1]byte
		p := fmt.Sprintf("/proc/self/fd/%d/rw/upper%s", stagingDir.Fd(), m.target)
		if n, err := unix.Getxattr(p, "trusted.overlay.opaque", v[:]); err != nil || n != 1 || v[0] != 'y' {
			t.Errorf("%s in the upper layer: opaque %q, %v", m.target, v[:max(n, 0)], err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "lower")); err == nil {
		t.Errorf("the host's %s is visible from the new root", dir)
	}
	mi, err = os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Errorf("/proc did not come along: %v", err)
	}
	if !rootIsOverlay(string(mi)) {
		t.Errorf("/ is not the overlay:\n%s", mi)
	}
	if _, err := os.Stat("/dev/null"); err != nil {
		t.Errorf("/dev did not come along: %v", err)
	}
	if err := os.WriteFile("/mnt/rw/from-guest.txt", []byte("written in the guest\n"), 0o644); err != nil {
		t.Errorf("writing the read-write share: %v", err)
	}
	if b, err := os.ReadFile("/mnt/rw/deeper/deep.txt"); err != nil || string(b) != "deep\n" {
		t.Errorf("nested share: %q, %v", b, err)
	}
	if b, err := os.ReadFile("/mnt/ro/ro.txt"); err != nil || string(b) != "read only\n" {
		t.Errorf("read-only share: %q, %v", b, err)
	}
	if err := os.WriteFile("/mnt/ro/x", nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing the read-only share: %v, want EROFS", err)
	}
	if _, err := os.Stat("/mnt/keep"); err != nil {
		t.Errorf("/mnt/keep of the lower layer: %v", err)
	}
	if !t.Failed() {
		t.Log("root switched")
	}
}

// rootIsOverlay reports whether mountinfo's / is an overlay.
func rootIsOverlay(mountinfo string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		for i, x := range f {
			if x == "-" && len(f) > 4 && f[4] == "/" && i+1 < len(f) && f[i+1] == "overlay" {
				return true
			}
		}
	}
	return false
}
