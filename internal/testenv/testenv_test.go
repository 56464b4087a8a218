package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv/require"
)

// outcome runs fn with a recording TB under the given CORRAL_REQUIRE.
func outcome(t *testing.T, env string, fn func(t testing.TB)) *require.Recorder {
	t.Helper()
	t.Setenv(require.Env, env)
	r := &require.Recorder{}
	r.Run(fn)
	return r
}

// TestKVMUnavailableVersusBroken checks the two ways opening KVM fails: a
// device that cannot be opened skips unless kvm is required, and a device
// that opens but is not KVM (/dev/null answers no KVM ioctl, as a host
// lacking a capability answers no to one) fails even when nothing is
// required.
func TestKVMUnavailableVersusBroken(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "kvm")
	if r := outcome(t, "", func(t testing.TB) { mustHaveKVMAt(t, absent) }); r.SkipMsg == "" || r.FailMsg != "" || !strings.Contains(r.SkipMsg, absent) {
		t.Errorf("absent device, nothing required: %+v, want a skip naming %s", r, absent)
	}
	if r := outcome(t, "root,qemu", func(t testing.TB) { mustHaveKVMAt(t, absent) }); r.SkipMsg == "" {
		t.Errorf("absent device, kvm not required: %+v, want a skip", r)
	}
	if r := outcome(t, "root,kvm", func(t testing.TB) { mustHaveKVMAt(t, absent) }); r.FailMsg == "" {
		t.Errorf("absent device, kvm required: %+v, want a failure", r)
	}
	for _, env := range []string{"", "kvm"} {
		r := outcome(t, env, func(t testing.TB) { mustHaveKVMAt(t, "/dev/null") })
		if r.FailMsg == "" || r.SkipMsg != "" || !strings.Contains(r.FailMsg, "KVM_GET_API_VERSION") {
			t.Errorf("a device that is not KVM, %s=%q: %+v, want a failure naming the ioctl", require.Env, env, r)
		}
	}
}

func TestMustHaveCommand(t *testing.T) {
	// sh is on every Debian machine: found, nothing recorded.
	var path string
	if r := outcome(t, "tools", func(t testing.TB) { path = MustHaveCommand(t, "sh", "dash") }); r.SkipMsg != "" || r.FailMsg != "" || path == "" {
		t.Errorf("sh: path %q, %+v", path, r)
	}
	const absent = "corral-no-such-command"
	r := outcome(t, "", func(t testing.TB) { MustHaveCommand(t, absent, "corral-pkg") })
	if r.SkipMsg == "" || !strings.Contains(r.SkipMsg, "apt-get install -y corral-pkg") {
		t.Errorf("absent command: %+v, want a skip saying which package to install", r)
	}
	if r := outcome(t, "tools", func(t testing.TB) { MustHaveCommand(t, absent, "corral-pkg") }); r.FailMsg == "" {
		t.Errorf("absent command with tools required: %+v, want a failure", r)
	}
}

// TestMustHaveCommandSbin finds a command outside PATH in /usr/sbin, as
// debugfs is for a normal user.
func TestMustHaveCommandSbin(t *testing.T) {
	ents, _ := os.ReadDir("/usr/sbin")
	var name string
	for _, e := range ents {
		if fi, err := os.Stat(filepath.Join("/usr/sbin", e.Name())); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			name = e.Name()
			break
		}
	}
	if name == "" {
		t.Skip("skipping: no executable in /usr/sbin on this host")
	}
	t.Setenv("PATH", t.TempDir())
	var path string
	r := outcome(t, "tools", func(t testing.TB) { path = MustHaveCommand(t, name, "x") })
	if r.FailMsg != "" || r.SkipMsg != "" || filepath.Base(path) != name {
		t.Errorf("%s in /usr/sbin with an empty PATH: path %q, %+v", name, path, r)
	}
}

func TestMustHaveFileAndQEMU(t *testing.T) {
	f := filepath.Join(t.TempDir(), "present")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := outcome(t, "tools", func(t testing.TB) { MustHaveFile(t, f, "p") }); r.FailMsg != "" || r.SkipMsg != "" {
		t.Errorf("present file: %+v", r)
	}
	if r := outcome(t, "tools", func(t testing.TB) { MustHaveFile(t, f+".absent", "p") }); r.FailMsg == "" {
		t.Errorf("absent file with tools required: %+v, want a failure", r)
	}
	t.Setenv("PATH", t.TempDir())
	if r := outcome(t, "", func(t testing.TB) { MustHaveQEMU(t) }); r.SkipMsg == "" || !strings.Contains(r.SkipMsg, QEMUBinary) {
		t.Errorf("no QEMU on PATH: %+v, want a skip naming %s", r, QEMUBinary)
	}
	if r := outcome(t, "qemu", func(t testing.TB) { MustHaveQEMU(t) }); r.FailMsg == "" {
		t.Errorf("no QEMU on PATH, qemu required: %+v, want a failure", r)
	}
}

func TestMustHaveRoot(t *testing.T) {
	r := outcome(t, "root", MustHaveRoot)
	if root := os.Geteuid() == 0; root != (r.FailMsg == "" && r.SkipMsg == "") {
		t.Errorf("euid %d, root required: %+v", os.Geteuid(), r)
	}
}

// TestLoopDevice attaches a file and checks the device reads as the file
// does, then that it is detached when the subtest ends.
func TestLoopDevice(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	want := bytes.Repeat([]byte("corral!\n"), 1<<16) // 512 KiB
	if err := os.WriteFile(img, want, 0o644); err != nil {
		t.Fatal(err)
	}
	var dev string
	t.Run("attached", func(t *testing.T) {
		dev = LoopDevice(t, img)
		got, err := os.ReadFile(dev)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s reads %d bytes (%v), want the %d bytes of %s", dev, len(got), err, len(want), img)
		}
	})
	if dev == "" {
		t.Skip("skipping: no loop device attached")
	}
	out, err := exec.Command(MustHaveCommand(t, "losetup", "mount"), "-j", img).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("after the subtest, losetup -j %s: %v: %s", img, err, out)
	}
}
