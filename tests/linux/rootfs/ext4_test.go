package rootfs

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// debugfs runs one debugfs request against img and returns its standard output.
func debugfs(t *testing.T, tool, img, request string) string {
	t.Helper()
	cmd := exec.Command(tool, "-R", request, img)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", request, err, stderr.Bytes())
	}
	return stdout.String()
}

func TestBuildExt4(t *testing.T) {
	requireBusybox(t)
	requireSbin(t, "mkfs.ext4")
	dbg := requireSbin(t, "debugfs")
	img := filepath.Join(t.TempDir(), "root.ext4")
	opts := InitramfsOptions{
		Script: "echo from ext4\n",
		Exit:   ExitReboot,
		Files:  []File{{Path: "/data/hello.txt", Data: []byte("hello ext4\n")}},
	}
	if err := BuildExt4(img, 16, opts); err != nil {
		t.Fatalf("BuildExt4: %v", err)
	}
	st, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 16<<20 {
		t.Errorf("image size %d, want %d", st.Size(), 16<<20)
	}

	if got := debugfs(t, dbg, img, "cat /init"); got != initScript {
		t.Errorf("debugfs cat /init returned %d bytes that differ from the %d of init.sh", len(got), len(initScript))
	}
	if got := debugfs(t, dbg, img, "cat /data/hello.txt"); got != "hello ext4\n" {
		t.Errorf("/data/hello.txt = %q", got)
	}
	if got := debugfs(t, dbg, img, "cat /etc/corral/script"); got != opts.Script {
		t.Errorf("/etc/corral/script = %q", got)
	}
	if got := debugfs(t, dbg, img, "cat /etc/corral/config"); !strings.Contains(got, "exit_method=reboot\n") {
		t.Errorf("/etc/corral/config lacks exit_method=reboot:\n%s", got)
	}
	for path, target := range map[string]string{"/bin/sh": "busybox", "/bin/init": "../init", "/sbin": "bin"} {
		got := debugfs(t, dbg, img, "stat "+path)
		if !strings.Contains(got, "Type: symlink") || !strings.Contains(got, `Fast link dest: "`+target+`"`) {
			t.Errorf("%s is not a symlink to %s:\n%s", path, target, got)
		}
	}
	bbStat := debugfs(t, dbg, img, "stat /bin/busybox")
	if !strings.Contains(bbStat, "Mode:  0755") {
		t.Errorf("/bin/busybox not mode 0755:\n%s", bbStat)
	}
	if got := debugfs(t, dbg, img, "stat /tmp"); !strings.Contains(got, "Mode:  01777") {
		t.Errorf("/tmp not mode 01777:\n%s", got)
	}
	if got := debugfs(t, dbg, img, "stat /"); !strings.Contains(got, "User:     0   Group:     0") {
		t.Errorf("root directory not owned by 0:0:\n%s", got)
	}

	if fsck, err := exec.LookPath("e2fsck"); err == nil || fileExists("/usr/sbin/e2fsck") {
		if fsck == "" {
			fsck = "/usr/sbin/e2fsck"
		}
		if out, err := exec.Command(fsck, "-fn", img).CombinedOutput(); err != nil {
			t.Errorf("e2fsck -fn: %v\n%s", err, out)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestBuildExt4FromDirErrors(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "x.ext4")
	for _, size := range []int{0, -1, 1<<20 + 1} {
		if err := BuildExt4FromDir(img, size, dir); err == nil {
			t.Errorf("size %d MiB accepted", size)
		}
	}
	if err := BuildExt4FromDir(img, 8, filepath.Join(dir, "absent")); err == nil {
		t.Error("missing source directory accepted")
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := BuildExt4FromDir(img, 8, file); err == nil {
		t.Error("source that is a file accepted")
	}
	err := BuildExt4(img, 8, InitramfsOptions{Busybox: filepath.Join(dir, "absent")})
	if !errors.Is(err, ErrBusyboxMissing) {
		t.Errorf("missing busybox: got %v, want ErrBusyboxMissing", err)
	}
}

func TestBuildExt4TooSmall(t *testing.T) {
	requireBusybox(t)
	requireSbin(t, "mkfs.ext4")
	// Busybox alone is about 2 MiB: a 1 MiB image cannot hold it, and the
	// error must say so rather than leave a broken image unreported.
	if err := BuildExt4(filepath.Join(t.TempDir(), "tiny.ext4"), 1, InitramfsOptions{}); err == nil {
		t.Error("BuildExt4 into 1 MiB succeeded")
	}
}
