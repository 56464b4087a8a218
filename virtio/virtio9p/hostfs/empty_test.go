package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// TestEmpty: a directory of Options.Empty is there, with nothing in it,
// under every name it has, and nothing in it can be made or changed; the
// rest of the share is served as before.
func TestEmpty(t *testing.T) {
	_, share := tree(t)
	for _, d := range []string{"proc", "proc/1", "run", "tmp"} {
		if err := os.Mkdir(filepath.Join(share, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"proc/secret", "proc/1/environ", "tmp/x"} {
		if err := os.WriteFile(filepath.Join(share, f), []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, root := open(t, share, Options{Empty: []string{"/proc", "tmp", "missing", "a.txt", "inner"}})

	proc := mustWalk(t, root, "proc")
	if _, err := walk(t, proc, "secret"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("walk proc/secret: %v, want ENOENT", err)
	}
	if _, err := walk(t, root, "proc", "1", "environ"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("walk proc/1/environ in one walk: %v, want ENOENT", err)
	}
	clone := mustWalk(t, proc) // an empty walk clones the fid
	if _, err := walk(t, clone, "1"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("walk 1 from a clone of proc: %v, want ENOENT", err)
	}
	if _, _, err := proc.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	ents, err := proc.Readdir(0, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name != "." && e.Name != ".." {
			t.Errorf("readdir of proc gives %q", e.Name)
		}
	}

	tmp := mustWalk(t, root, "tmp")
	if _, _, _, err := tmp.Create("new", p9.WriteOnly, 0o644, 0, 0); !errors.Is(err, unix.EACCES) {
		t.Errorf("create in tmp: %v, want EACCES", err)
	}
	if _, err := tmp.Mkdir("new", 0o755, 0, 0); !errors.Is(err, unix.EACCES) {
		t.Errorf("mkdir in tmp: %v, want EACCES", err)
	}
	if err := tmp.UnlinkAt("x", 0); !errors.Is(err, unix.EACCES) {
		t.Errorf("unlink tmp/x: %v, want EACCES", err)
	}
	if err := root.RenameAt("a.txt", tmp, "a.txt"); !errors.Is(err, unix.EACCES) {
		t.Errorf("rename into tmp: %v, want EACCES", err)
	}
	if err := tmp.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777}); !errors.Is(err, unix.EACCES) {
		t.Errorf("chmod tmp: %v, want EACCES", err)
	}
	if _, err := os.Stat(filepath.Join(share, "tmp", "x")); err != nil {
		t.Errorf("the host's tmp/x: %v", err)
	}

	// Not listed, a file, a symbolic link, missing: served as before.
	if got := readAll(t, mustWalk(t, root, "d", "b")); got != "bee" {
		t.Errorf("d/b = %q", got)
	}
	if got := readAll(t, mustWalk(t, root, "a.txt")); got != "hello" {
		t.Errorf("a.txt = %q", got)
	}
	run := mustWalk(t, root, "run")
	if _, err := run.Mkdir("new", 0o755, 0, 0); err != nil {
		t.Errorf("mkdir in run (not listed): %v", err)
	}
	if _, err := mustWalk(t, root, "inner").Readlink(); err != nil {
		t.Errorf("readlink inner: %v", err)
	}
}

// TestEmptyByInode: the same directory reached under two names (a bind
// mount of it) is empty under both.
func TestEmptyByInode(t *testing.T) {
	_, share := tree(t)
	if err := os.WriteFile(filepath.Join(share, "d", "hidden"), []byte("host"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(share, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(filepath.Join(share, "d"), other, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount (%v)", err)
	}
	t.Cleanup(func() { unix.Unmount(other, unix.MNT_DETACH) })
	_, root := open(t, share, Options{Empty: []string{"d"}})
	for _, name := range []string{"d", "other"} {
		if _, err := walk(t, root, name, "hidden"); !errors.Is(err, unix.ENOENT) {
			t.Errorf("walk %s/hidden: %v, want ENOENT", name, err)
		}
	}
}

func TestEmptyBadPath(t *testing.T) {
	_, share := tree(t)
	for _, p := range []string{"", "/", "d/../..", "./d", "d//b"} {
		if _, err := New(share, Options{Empty: []string{p}}); err == nil {
			t.Errorf("New with Empty %q: no error", p)
		}
	}
}
