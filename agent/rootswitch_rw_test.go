package agent

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/testenv"
)

// rwRootChild names the directory the child of
// TestWritableRootInNamespace works in.
const rwRootChild = "CORRAL_AGENT_RWROOT_DIR"

// TestWritableRootInNamespace runs the real setup of a read-write root
// (9p replaced by a bind mount, as in TestRootSwitchInMountNamespace)
// with a host name and a tmpfs, in a child with mount and UTS namespaces
// of its own: the guest's writes land in the host directory, the tmpfs
// is a tmpfs (its mount point made in the root, its files not), and the
// host name is set.
func TestWritableRootInNamespace(t *testing.T) {
	if dir := os.Getenv(rwRootChild); dir != "" {
		rwRootChildMain(t, dir)
		return
	}
	testenv.MustHaveRoot(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "hello.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	runChild(t, "TestWritableRootInNamespace", rwRootChild+"="+dir, syscall.CLONE_NEWNS|syscall.CLONE_NEWUTS, "writable root done")
	if b, err := os.ReadFile(filepath.Join(root, "f")); err != nil || string(b) != "hi\n" {
		t.Errorf("the guest's write on the host: %q, %v; want \"hi\\n\"", b, err)
	}
	if fi, err := os.Stat(filepath.Join(root, "scratch")); err != nil || !fi.IsDir() {
		t.Errorf("the tmpfs mount point on the host: %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "scratch/x")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file of the tmpfs reached the host: %v", err)
	}
	if h, _ := os.Hostname(); h != host {
		t.Errorf("the host's name changed from %q to %q", host, h)
	}
}

func rwRootChildMain(t *testing.T, dir string) {
	if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		t.Fatalf("making / private: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "root"), unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	ops := bindOps{dirs: map[string]*os.File{"rootfs": f}}
	staging := filepath.Join(dir, "staging")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	var api []mount
	for _, m := range baseMounts() {
		if filepath.Dir(m.target) == "/" && bytes.Contains(mi, []byte(" "+m.target+" ")) {
			api = append(api, m)
		}
	}
	cfg, err := ParseCmdline("corral.root=9p:rootfs:rw corral.hostname=t1 corral.tmpfs=/scratch")
	if err != nil {
		t.Fatal(err)
	}
	s := &setup{sys: ops, log: slog.New(slog.NewTextHandler(os.Stderr, nil)), staging: staging}
	s.apply(cfg, api)
	if err := s.err(); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile("/hello.txt"); err != nil || string(b) != "from the host\n" {
		t.Errorf("/hello.txt: %q, %v", b, err)
	}
	if err := os.WriteFile("/f", []byte("hi\n"), 0o644); err != nil {
		t.Errorf("writing the root: %v", err)
	}
	if h, err := os.Hostname(); err != nil || h != "t1" {
		t.Errorf("host name %q, %v; want t1", h, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/scratch", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Errorf("/scratch: statfs type %#x, %v; want tmpfs", st.Type, err)
	}
	if fi, err := os.Stat("/scratch"); err != nil || fi.Mode().Perm() != 0o777 || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("/scratch: %v, %v; want mode 1777", fi.Mode(), err)
	}
	if err := os.WriteFile("/scratch/x", []byte("tmp\n"), 0o644); err != nil {
		t.Errorf("writing the tmpfs: %v", err)
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		t.Errorf("/proc did not come along: %v", err)
	}
	if !t.Failed() {
		t.Log("writable root done")
	}
}
