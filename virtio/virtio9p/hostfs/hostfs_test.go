package hostfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hugelgupf/p9/p9"
	"golang.org/x/sys/unix"
)

// tree makes base/share holding a file, a directory, symbolic links that
// point out of the share, and a FIFO; base/outside holds a secret.
func tree(t *testing.T) (base, share string) {
	t.Helper()
	base = t.TempDir()
	share = filepath.Join(base, "share")
	out := filepath.Join(base, "outside")
	for _, d := range []string{share, out, filepath.Join(share, "d")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(out, "secret"), "secret")
	write(filepath.Join(share, "a.txt"), "hello")
	write(filepath.Join(share, "d", "b"), "bee")
	links := map[string]string{
		"etc":   "/etc",
		"up":    "../outside",
		"abs":   out,
		"upf":   "../outside/secret",
		"inner": "d",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(share, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mkfifo(filepath.Join(share, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	return base, share
}

func open(t *testing.T, dir string, opts Options) (*FS, *File) {
	t.Helper()
	fs, err := New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	root, err := fs.Attach()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return fs, root.(*File)
}

func walk(t *testing.T, f *File, names ...string) (*File, error) {
	t.Helper()
	qids, nf, err := f.Walk(names)
	if err != nil {
		return nil, err
	}
	if len(qids) != len(names) {
		t.Fatalf("walk %q: %d qids", names, len(qids))
	}
	t.Cleanup(func() { nf.Close() })
	return nf.(*File), nil
}

func mustWalk(t *testing.T, f *File, names ...string) *File {
	t.Helper()
	nf, err := walk(t, f, names...)
	if err != nil {
		t.Fatalf("walk %q: %v", names, err)
	}
	return nf
}

func readAll(t *testing.T, f *File) string {
	t.Helper()
	if _, _, err := f.Open(p9.ReadOnly); err != nil {
		t.Fatalf("open: %v", err)
	}
	b := make([]byte, 4096)
	n, err := f.ReadAt(b, 0)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b[:n])
}

func TestWalkRefusesBadNames(t *testing.T) {
	_, share := tree(t)
	_, root := open(t, share, Options{})
	for _, name := range []string{"", ".", "..", "d/b", "/etc", "a\x00b", string(make([]byte, 256))} {
		if _, err := walk(t, root, name); !errors.Is(err, unix.EINVAL) {
			t.Errorf("walk %q: %v, want EINVAL", name, err)
		}
	}
	d := mustWalk(t, root, "d")
	if _, err := walk(t, d, ".."); !errors.Is(err, unix.EINVAL) {
		t.Errorf("walk d/..: %v, want EINVAL", err)
	}
	many := make([]string, MaxWalk+1)
	for i := range many {
		many[i] = "d"
	}
	if _, err := walk(t, root, many...); !errors.Is(err, unix.EINVAL) {
		t.Errorf("walk of %d names: %v, want EINVAL", len(many), err)
	}
	if got := readAll(t, mustWalk(t, root, "d", "b")); got != "bee" {
		t.Errorf("d/b = %q", got)
	}
}

// TestSymlinksNotFollowed: links pointing out of the share (absolute,
// relative with "..", to a directory or a file) are opaque: walking
// through them is ENOTDIR, opening them EPERM, and readlink gives their
// text for the guest to resolve in its own namespace.
func TestSymlinksNotFollowed(t *testing.T) {
	_, share := tree(t)
	_, root := open(t, share, Options{})
	for _, p := range [][]string{{"etc", "passwd"}, {"up", "secret"}, {"abs", "secret"}, {"inner", "b"}} {
		if _, err := walk(t, root, p...); !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("walk %q: %v, want ENOTDIR", p, err)
		}
	}
	for name, want := range map[string]string{"etc": "/etc", "upf": "../outside/secret", "inner": "d"} {
		l := mustWalk(t, root, name)
		if _, _, err := l.Open(p9.ReadOnly); !errors.Is(err, unix.EPERM) {
			t.Errorf("open %s: %v, want EPERM", name, err)
		}
		if got, err := l.Readlink(); err != nil || got != want {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, want)
		}
		if err := l.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}); !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("truncate through link %s: %v, want EOPNOTSUPP", name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(filepath.Dir(share), "outside", "secret")); err != nil || string(b) != "secret" {
		t.Fatalf("outside secret changed: %q %v", b, err)
	}
}

func TestSpecialFilesNotOpened(t *testing.T) {
	_, share := tree(t)
	special := []string{"fifo"}
	if err := unix.Mknod(filepath.Join(share, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err == nil {
		special = append(special, "null")
	} else {
		t.Logf("no device node (%v): testing the FIFO only", err)
	}
	_, root := open(t, share, Options{})
	for _, name := range special {
		f := mustWalk(t, root, name)
		done := make(chan error, 1)
		go func() { _, _, err := f.Open(p9.ReadOnly); done <- err }()
		select {
		case err := <-done:
			if !errors.Is(err, unix.EPERM) {
				t.Errorf("open %s: %v, want EPERM", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("open %s blocked: the server opened it", name)
		}
		// Creating over it must not open it either.
		done2 := make(chan error, 1)
		go func() { _, _, _, err := root.Create(name, p9.ReadWrite, 0o644, 0, 0); done2 <- err }()
		select {
		case err := <-done2:
			if !errors.Is(err, unix.EEXIST) {
				t.Errorf("create over %s: %v, want EEXIST", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("create over %s blocked", name)
		}
	}
	if _, err := root.Mknod("dev", p9.ModeCharacterDevice|0o666, 1, 3, 0, 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("mknod: %v, want EPERM", err)
	}
	if _, err := os.Lstat(filepath.Join(share, "dev")); !os.IsNotExist(err) {
		t.Errorf("mknod made a node: %v", err)
	}
}

// TestSwapDirForSymlink: a directory replaced by a link to /etc after the
// walk: the held File still names the original directory, and a new walk
// stops at the link.
func TestSwapDirForSymlink(t *testing.T) {
	base, share := tree(t)
	_, root := open(t, share, Options{})
	d := mustWalk(t, root, "d")
	moved := filepath.Join(base, "moved")
	if err := os.Rename(filepath.Join(share, "d"), moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", filepath.Join(share, "d")); err != nil {
		t.Fatal(err)
	}
	if _, err := walk(t, d, "passwd"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("walk held d to passwd: %v, want ENOENT (the original directory)", err)
	}
	if got := readAll(t, mustWalk(t, d, "b")); got != "bee" {
		t.Errorf("held d/b = %q", got)
	}
	if _, err := walk(t, root, "d", "passwd"); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("fresh walk d/passwd: %v, want ENOTDIR", err)
	}
}

// TestSwapFileForSymlink: a file replaced by a link to a host file between
// walk and open: the open reaches the walked inode, not the link's target.
func TestSwapFileForSymlink(t *testing.T) {
	base, share := tree(t)
	_, root := open(t, share, Options{})
	f := mustWalk(t, root, "a.txt")
	p := filepath.Join(share, "a.txt")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(base, "outside", "secret"), p); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, f); got != "hello" {
		t.Fatalf("read after swap = %q, want the walked file's %q", got, "hello")
	}
}

func TestReadOnlyRefusesMutation(t *testing.T) {
	_, share := tree(t)
	_, root := open(t, share, Options{ReadOnly: true})
	a := mustWalk(t, root, "a.txt")
	d := mustWalk(t, root, "d")
	checks := map[string]func() error{
		"open write": func() error { _, _, err := a.Open(p9.WriteOnly); return err },
		"open rdwr":  func() error { _, _, err := a.Open(p9.ReadWrite); return err },
		"open trunc": func() error { _, _, err := a.Open(p9.ReadOnly | dotlTrunc); return err },
		"create":     func() error { _, _, _, err := root.Create("new", p9.ReadWrite, 0o644, 0, 0); return err },
		"mkdir":      func() error { _, err := root.Mkdir("nd", 0o755, 0, 0); return err },
		"symlink":    func() error { _, err := root.Symlink("x", "nl", 0, 0); return err },
		"link":       func() error { return root.Link(a, "hl") },
		"mknod":      func() error { _, err := root.Mknod("n", p9.ModeRegular|0o644, 0, 0, 0, 0); return err },
		"rename":     func() error { return root.RenameAt("a.txt", d, "moved") },
		"unlink":     func() error { return root.UnlinkAt("a.txt", 0) },
		"rmdir":      func() error { return root.UnlinkAt("d", unix.AT_REMOVEDIR) },
		"chmod":      func() error { return a.SetAttr(p9.SetAttrMask{Permissions: true}, p9.SetAttr{Permissions: 0o777}) },
		"truncate":   func() error { return a.SetAttr(p9.SetAttrMask{Size: true}, p9.SetAttr{}) },
		"utimes":     func() error { return a.SetAttr(p9.SetAttrMask{MTime: true}, p9.SetAttr{}) },
		"setxattr":   func() error { return a.SetXattr("user.x", []byte("y"), 0) },
		"rmxattr":    func() error { return a.RemoveXattr("user.x") },
	}
	for name, fn := range checks {
		if err := fn(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s: %v, want EROFS", name, err)
		}
	}
	if got := readAll(t, a); got != "hello" {
		t.Errorf("a.txt = %q", got)
	}
	if _, err := a.WriteAt([]byte("x"), 0); !errors.Is(err, unix.EROFS) {
		t.Errorf("write: %v, want EROFS", err)
	}
	entries, err := os.ReadDir(share)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 8 {
		t.Errorf("share changed: %d entries", len(entries))
	}
}

func TestReadWrite(t *testing.T) {
	_, share := tree(t)
	_, root := open(t, share, Options{})
	nf, _, _, err := root.Create("new", p9.ReadWrite, 0o6755, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	if n, err := nf.WriteAt([]byte("data"), 2); err != nil || n != 4 {
		t.Fatalf("write: %d %v", n, err)
	}
	st, err := os.Stat(filepath.Join(share, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&(os.ModeSetuid|os.ModeSetgid) != 0 || st.Mode().Perm() != 0o755 {
		t.Errorf("created mode %v: want 0755 without set-id bits", st.Mode())
	}
	b, _ := os.ReadFile(filepath.Join(share, "new"))
	if string(b) != "\x00\x00data" {
		t.Errorf("content %q", b)
	}
	f := mustWalk(t, root, "new")
	if err := f.SetAttr(p9.SetAttrMask{Permissions: true, Size: true}, p9.SetAttr{Permissions: 0o4640, Size: 3}); err != nil {
		t.Fatal(err)
	}
	st, _ = os.Stat(filepath.Join(share, "new"))
	if st.Mode() != 0o640 || st.Size() != 3 {
		t.Errorf("after setattr: %v size %d", st.Mode(), st.Size())
	}
	if err := f.SetAttr(p9.SetAttrMask{UID: true}, p9.SetAttr{UID: p9.UID(os.Geteuid() + 1)}); !errors.Is(err, unix.EPERM) {
		t.Errorf("chown to another user: %v, want EPERM", err)
	}
	if err := f.SetAttr(p9.SetAttrMask{UID: true, GID: true}, p9.SetAttr{UID: p9.UID(os.Geteuid()), GID: p9.GID(os.Getegid())}); err != nil {
		t.Errorf("chown to self: %v", err)
	}
	mt := time.Unix(1_000_000_000, 5)
	if err := f.SetAttr(p9.SetAttrMask{MTime: true, MTimeNotSystemTime: true}, p9.SetAttr{MTimeSeconds: uint64(mt.Unix()), MTimeNanoSeconds: 5}); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(share, "new")); !st.ModTime().Equal(mt) {
		t.Errorf("mtime %v, want %v", st.ModTime(), mt)
	}
	if _, err := root.Mkdir("sub", 0o2750, 0, 0); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(filepath.Join(share, "sub")); st.Mode() != os.ModeDir|0o750 {
		t.Errorf("mkdir mode %v", st.Mode())
	}
	sub := mustWalk(t, root, "sub")
	if err := root.RenameAt("new", sub, "renamed"); err != nil {
		t.Fatal(err)
	}
	if err := sub.Link(mustWalk(t, sub, "renamed"), "hard"); err != nil {
		t.Fatal(err)
	}
	if err := sub.Link(mustWalk(t, root, "etc"), "hardlink-to-link"); !errors.Is(err, unix.EPERM) {
		t.Errorf("hard link to a symbolic link: %v, want EPERM", err)
	}
	if _, err := root.Symlink("/etc/passwd", "pw", 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mustWalk(t, root, "pw").Open(p9.ReadOnly); !errors.Is(err, unix.EPERM) {
		t.Errorf("open guest-made link: %v, want EPERM", err)
	}
	if err := root.RenameAt("a.txt", sub, ".."); !errors.Is(err, unix.EINVAL) {
		t.Errorf("rename to ..: %v, want EINVAL", err)
	}
	if err := sub.UnlinkAt("hard", 0); err != nil {
		t.Fatal(err)
	}
	if err := root.UnlinkAt("sub", unix.AT_REMOVEDIR); !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("rmdir non-empty: %v", err)
	}
	if err := root.UnlinkAt("../outside", 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("unlink ../outside: %v, want EINVAL", err)
	}
}

func TestReaddir(t *testing.T) {
	_, share := tree(t)
	for i := 0; i < 300; i++ {
		if err := os.WriteFile(filepath.Join(share, "d", "f"+string(rune('a'+i%26))+string(rune('a'+i/26))), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, root := open(t, share, Options{})
	d := mustWalk(t, root, "d")
	if _, _, err := d.Open(p9.ReadOnly); err != nil {
		t.Fatal(err)
	}
	var names []string
	off := uint64(0)
	for calls := 0; ; calls++ {
		ents, err := d.Readdir(off, 512)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 0 {
			break
		}
		if calls > 1000 {
			t.Fatal("readdir does not end")
		}
		for _, e := range ents {
			names = append(names, e.Name)
		}
		off = ents[len(ents)-1].Offset
	}
	slices.Sort(names)
	if len(names) != 303 || !slices.Contains(names, "b") || !slices.Contains(names, "..") {
		t.Errorf("%d names; first %q", len(names), names[:min(5, len(names))])
	}
	if len(slices.Compact(names)) != 303 {
		t.Error("duplicate names across readdir calls")
	}
}

func TestMaxFiles(t *testing.T) {
	_, share := tree(t)
	fs, root := open(t, share, Options{MaxFiles: 3})
	a := mustWalk(t, root, "a.txt")
	_ = mustWalk(t, root, "d")
	if _, err := walk(t, root, "d"); !errors.Is(err, unix.EMFILE) {
		t.Fatalf("walk past MaxFiles: %v, want EMFILE", err)
	}
	if _, err := fs.Attach(); !errors.Is(err, unix.EMFILE) {
		t.Fatalf("attach past MaxFiles: %v, want EMFILE", err)
	}
	a.Close()
	if _, err := walk(t, root, "d"); err != nil {
		t.Fatalf("walk after a close: %v", err)
	}
	if fs.Files() != 3 {
		t.Errorf("Files = %d, want 3", fs.Files())
	}
}

// TestMountInside: a file system mounted inside the share is served, with
// QIDs that do not collide with the share's.
func TestMountInside(t *testing.T) {
	_, share := tree(t)
	mnt := filepath.Join(share, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount tmpfs (%v)", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := os.WriteFile(filepath.Join(mnt, "x"), []byte("in tmpfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, root := open(t, share, Options{})
	m := mustWalk(t, root, "mnt")
	rq, _, _, _ := root.GetAttr(p9.AttrMask{})
	mq, _, _, _ := m.GetAttr(p9.AttrMask{})
	if rq.Path>>qidPathBits == mq.Path>>qidPathBits {
		t.Errorf("root and mount QIDs share a device index: %#x %#x", rq.Path, mq.Path)
	}
	if got := readAll(t, mustWalk(t, m, "x")); got != "in tmpfs" {
		t.Errorf("mnt/x = %q", got)
	}
}

func TestNewErrors(t *testing.T) {
	_, share := tree(t)
	if _, err := New(filepath.Join(share, "a.txt"), Options{}); !errors.Is(err, ErrNotDir) {
		t.Errorf("New on a file: %v, want ErrNotDir", err)
	}
	if _, err := New(filepath.Join(share, "missing"), Options{}); !errors.Is(err, unix.ENOENT) {
		t.Errorf("New on a missing path: %v", err)
	}
}

// TestOpenatFallback: without openat2, O_NOFOLLOW per name keeps walks in.
func TestOpenatFallback(t *testing.T) {
	_, share := tree(t)
	fs, root := open(t, share, Options{})
	fs.noOpenat2.Store(true)
	for _, p := range [][]string{{"etc", "passwd"}, {"up", "secret"}, {"abs", "secret"}} {
		if _, err := walk(t, root, p...); !errors.Is(err, unix.ENOTDIR) {
			t.Errorf("walk %q: %v, want ENOTDIR", p, err)
		}
	}
	if _, _, err := mustWalk(t, root, "upf").Open(p9.ReadOnly); !errors.Is(err, unix.EPERM) {
		t.Errorf("open upf: %v, want EPERM", err)
	}
	if got := readAll(t, mustWalk(t, root, "d", "b")); got != "bee" {
		t.Errorf("d/b = %q", got)
	}
}
