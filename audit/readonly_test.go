package audit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// roMountEnv has a child mount a read-only tmpfs on that directory before
// it does its work (it runs in its own mount namespace).
const roMountEnv = "AUDIT_TEST_RO_MOUNT"

func init() {
	if d := os.Getenv(roMountEnv); d != "" {
		if err := unix.Mount("audit-test-ro", d, "tmpfs", unix.MS_RDONLY, ""); err != nil {
			fmt.Println("mount:", err)
			os.Exit(1)
		}
	}
}

// TestNotWritableDirectory: a trail on a read-only file system, or in a
// directory that cannot be created, is refused at Open with the same
// message and way out as one without write permission.
func TestNotWritableDirectory(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a read-only mount in a mount namespace and to run a child as another uid")
	}
	d := t.TempDir()
	for p := d; p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	bin := filepath.Join(d, "audit.test")
	b, _ := os.ReadFile(os.Args[0])
	os.WriteFile(bin, b, 0o755)
	ro := filepath.Join(d, "ro")
	os.Mkdir(ro, 0o755)
	for _, c := range []struct {
		path string
		ro   bool
		cred *syscall.Credential
		uid  int
	}{
		{filepath.Join(ro, "audit.jsonl"), true, nil, 0},                                                    // EROFS on the file
		{filepath.Join(ro, "log", "audit.jsonl"), true, nil, 0},                                             // EROFS on its directory
		{filepath.Join(d, "log", "audit.jsonl"), false, &syscall.Credential{Uid: 65534, Gid: 65534}, 65534}, // EACCES on its directory
	} {
		cmd := exec.Command(bin, "-test.run=^$", c.path)
		cmd.Env = append(os.Environ(), childEnv+"=open")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
		if c.ro {
			cmd.Env = append(cmd.Env, roMountEnv+"="+ro)
			cmd.SysProcAttr.Unshareflags = syscall.CLONE_NEWNS
		}
		out, _ := cmd.Output()
		want := fmt.Sprintf("error: audit: trail %s is not writable by uid %d (set $CORRAL_AUDIT_LOG)", c.path, c.uid)
		if !strings.HasPrefix(string(out), want) {
			t.Errorf("got %q\nwant %q...", out, want)
		}
	}
}
