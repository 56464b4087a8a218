package rootfs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/corral-vmm/corral/internal/testenv"
)

func readArchive(t *testing.T, data []byte) map[string]cpio.Record {
	t.Helper()
	rr := cpio.Newc.Reader(bytes.NewReader(data))
	var recs []cpio.Record
	for {
		r, err := rr.ReadRecord()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading back the initramfs after %d records: %v", len(recs), err)
		}
		recs = append(recs, r)
	}
	// The reader turns the trailer record into io.EOF; check it is really there.
	if !bytes.HasSuffix(bytes.TrimRight(data, "\x00"), []byte(cpio.Trailer)) {
		t.Fatalf("initramfs does not end with the %s record", cpio.Trailer)
	}
	out := map[string]cpio.Record{}
	seenIno := map[uint64]string{}
	for i, r := range recs {
		if _, dup := out[r.Name]; dup {
			t.Errorf("record %q appears twice", r.Name)
		}
		if r.Name != "." {
			parent := filepath.Dir(r.Name)
			if parent != "." {
				p, ok := out[parent]
				if !ok {
					t.Errorf("record %d %q comes before its parent %q", i, r.Name, parent)
				} else if p.Mode&cpio.S_IFMT != cpio.S_IFDIR {
					t.Errorf("parent %q of %q is not a directory", parent, r.Name)
				}
			}
		}
		if other, dup := seenIno[r.Ino]; dup {
			t.Errorf("records %q and %q share inode %d", other, r.Name, r.Ino)
		}
		seenIno[r.Ino] = r.Name
		out[r.Name] = r
	}
	return out
}

func recordData(t *testing.T, r cpio.Record) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatalf("reading record %s: %v", r.Name, err)
	}
	return b
}

func TestBuildInitramfsContents(t *testing.T) {
	bb := requireBusybox(t)
	busybox, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	opts := InitramfsOptions{
		Script: "echo hello from the test\nexit 7\n",
		Exit:   ExitPort,
		Files: []File{
			{Path: "/opt/data/blob", Data: []byte("payload"), Mode: 0o600},
			{Path: "/etc/hostname", Data: []byte("replaced\n")},
		},
	}
	if err := BuildInitramfs(&buf, opts); err != nil {
		t.Fatalf("BuildInitramfs: %v", err)
	}
	recs := readArchive(t, buf.Bytes())

	wantFile := func(name string, mode uint64, data []byte) {
		t.Helper()
		r, ok := recs[name]
		if !ok {
			t.Errorf("missing %s", name)
			return
		}
		if r.Mode != cpio.S_IFREG|mode {
			t.Errorf("%s mode %#o, want %#o", name, r.Mode, cpio.S_IFREG|mode)
		}
		if got := recordData(t, r); !bytes.Equal(got, data) {
			t.Errorf("%s has %d bytes that differ from the %d expected", name, len(got), len(data))
		}
	}
	wantFile("init", 0o755, []byte(initScript))
	wantFile("bin/busybox", 0o755, busybox)
	wantFile("usr/share/udhcpc/default.script", 0o755, []byte(udhcpcScript))
	wantFile("etc/corral/script", 0o755, []byte(opts.Script))
	wantFile("opt/data/blob", 0o600, []byte("payload"))
	wantFile("etc/hostname", 0o644, []byte("replaced\n"))

	cfg := string(recordData(t, recs["etc/corral/config"]))
	for _, want := range []string{"exit_method=port\n", "shell=0\n", "dhcp=1\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("etc/corral/config lacks %q:\n%s", want, cfg)
		}
	}

	for _, a := range append([]string{"sh", "mount", "ip", "udhcpc", "poweroff", "reboot", "cttyhack", "setsid", "base64", "dd"}, Applets()...) {
		r, ok := recs["bin/"+a]
		if !ok {
			t.Errorf("missing applet link bin/%s", a)
			continue
		}
		if r.Mode&cpio.S_IFMT != cpio.S_IFLNK || string(recordData(t, r)) != "busybox" {
			t.Errorf("bin/%s is not a symlink to busybox (mode %#o)", a, r.Mode)
		}
	}
	for name, target := range map[string]string{"sbin": "bin", "usr/bin": "../bin", "bin/init": "../init", "etc/resolv.conf": "../run/resolv.conf"} {
		r, ok := recs[name]
		if !ok || r.Mode&cpio.S_IFMT != cpio.S_IFLNK || string(recordData(t, r)) != target {
			t.Errorf("%s should be a symlink to %s", name, target)
		}
	}
	con, ok := recs["dev/console"]
	if !ok || con.Mode != cpio.S_IFCHR|0o600 || con.Rmajor != 5 || con.Rminor != 1 {
		t.Errorf("dev/console should be char 5,1 mode 0600, got %+v", con.Info)
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "etc", "mnt", "opt", "opt/data"} {
		if r, ok := recs[d]; !ok || r.Mode&cpio.S_IFMT != cpio.S_IFDIR {
			t.Errorf("missing directory %s", d)
		}
	}
	if r := recs["tmp"]; r.Mode&cpio.S_ISVTX == 0 {
		t.Errorf("tmp lacks the sticky bit: %#o", r.Mode)
	}
}

// TestBuildInitramfsGNUCpio checks the archive with an independent reader.
func TestBuildInitramfsGNUCpio(t *testing.T) {
	requireBusybox(t)
	gnu := testenv.MustHaveCommand(t, "cpio", "cpio")
	var buf bytes.Buffer
	if err := BuildInitramfs(&buf, InitramfsOptions{}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gnu, "-it", "--quiet")
	cmd.Stdin = bytes.NewReader(buf.Bytes())
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -it: %v", err)
	}
	names := strings.Fields(string(out))
	sort.Strings(names)
	for _, want := range []string{"init", "bin/busybox", "bin/sh", "dev/console", "usr/share/udhcpc/default.script"} {
		if i := sort.SearchStrings(names, want); i == len(names) || names[i] != want {
			t.Errorf("cpio -it does not list %s", want)
		}
	}
}

// TestAppletsExist checks every linked applet against the busybox binary itself.
func TestAppletsExist(t *testing.T) {
	bb := requireBusybox(t)
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		t.Fatalf("%s --list: %v", bb, err)
	}
	have := map[string]bool{}
	for _, a := range strings.Fields(string(out)) {
		have[a] = true
	}
	for _, a := range Applets() {
		if !have[a] {
			t.Errorf("busybox at %s has no applet %q", bb, a)
		}
	}
}

// TestScriptsParse runs busybox's shell in syntax-check mode over the shipped scripts.
func TestScriptsParse(t *testing.T) {
	bb := requireBusybox(t)
	for name, script := range map[string]string{"init.sh": initScript, "udhcpc.script": udhcpcScript} {
		cmd := exec.Command(bb, "sh", "-n")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("busybox sh -n %s: %v\n%s", name, err, out)
		}
	}
}

// TestUdhcpcScriptReportsLease runs the udhcpc script with ifconfig and
// route replaced by shell functions and checks the lease line it prints.
// Debian's busybox runs its own applets before anything on PATH, so the
// functions are what keeps the script off the host's interfaces; as a second
// guard it runs in a new, empty network namespace (unshare), and the test
// skips if it cannot make one.
func TestUdhcpcScriptReportsLease(t *testing.T) {
	bb := requireBusybox(t)
	unshare := testenv.MustHaveCommand(t, "unshare", "util-linux")
	nsArgs := []string{"--net"}
	if os.Geteuid() != 0 {
		nsArgs = []string{"--map-root-user", "--net"}
	}
	if out, err := exec.Command(unshare, append(nsArgs, "true")...).CombinedOutput(); err != nil {
		testenv.Missing(t, testenv.Root, "cannot create a network namespace (%v: %s); not running the udhcpc script", err, out)
	}

	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	resolv := filepath.Join(dir, "resolv.conf")
	stubs := "ifconfig() { echo \"ifconfig $*\" >>" + calls + "; }\n" +
		"route() { echo \"route $*\" >>" + calls + "; [ \"$1\" != del ]; }\n" +
		"ip() { echo \"ip $*\" >>" + calls + "; }\n"
	body := strings.ReplaceAll(udhcpcScript, "/etc/resolv.conf", resolv)
	script := filepath.Join(dir, "default.script")
	if err := os.WriteFile(script, []byte(stubs+body), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, append(nsArgs, bb, "sh", script, "bound")...)
	cmd.Env = []string{
		"PATH=/nonexistent", "interface=eth0", "ip=10.99.0.15", "subnet=255.255.255.0",
		"mask=24", "router=10.99.0.2 10.99.0.3", "dns=10.99.0.3", "lease=86400", "serverid=10.99.0.2",
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("udhcpc script: %v\n%s", err, out)
	}
	want := "corral-init: lease eth0 10.99.0.15/24 router 10.99.0.2 10.99.0.3 dns 10.99.0.3 server 10.99.0.2 time 86400\n"
	if string(out) != want {
		t.Errorf("udhcpc script printed %q, want %q", out, want)
	}
	got, _ := os.ReadFile(calls)
	wantCalls := "ifconfig eth0 10.99.0.15 netmask 255.255.255.0 up\nroute del default gw 0.0.0.0 dev eth0\nroute add default gw 10.99.0.2 dev eth0\n"
	if string(got) != wantCalls {
		t.Errorf("udhcpc script ran\n%s\nwant\n%s", got, wantCalls)
	}
	if r, _ := os.ReadFile(resolv); string(r) != "nameserver 10.99.0.3\n" {
		t.Errorf("resolv.conf = %q", r)
	}
}

func TestBuildInitramfsErrors(t *testing.T) {
	dir := t.TempDir()
	notELF := filepath.Join(dir, "busybox")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	fakeELF := filepath.Join(dir, "elf")
	if err := os.WriteFile(fakeELF, []byte("\x7fELF fake"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := BuildInitramfs(io.Discard, InitramfsOptions{Busybox: filepath.Join(dir, "absent")})
	if !errors.Is(err, ErrBusyboxMissing) {
		t.Errorf("missing busybox: got %v, want ErrBusyboxMissing", err)
	}
	if err := BuildInitramfs(io.Discard, InitramfsOptions{Busybox: notELF}); err == nil {
		t.Error("non-ELF busybox accepted")
	}
	for name, opts := range map[string]InitramfsOptions{
		"bad exit":         {Busybox: fakeELF, Exit: "explode"},
		"relative file":    {Busybox: fakeELF, Files: []File{{Path: "etc/x"}}},
		"file over dir":    {Busybox: fakeELF, Files: []File{{Path: "/etc"}}},
		"root":             {Busybox: fakeELF, Files: []File{{Path: "/"}}},
		"under a symlink":  {Busybox: fakeELF, Files: []File{{Path: "/usr/bin/tool"}}},
		"under a file":     {Busybox: fakeELF, Files: []File{{Path: "/init/x"}}},
		"under a char dev": {Busybox: fakeELF, Files: []File{{Path: "/dev/console/x"}}},
	} {
		if err := BuildInitramfs(io.Discard, opts); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := BuildInitramfs(io.Discard, InitramfsOptions{Busybox: fakeELF, Files: []File{{Path: "/a/../b/c"}}}); err != nil {
		t.Errorf("cleanable path rejected: %v", err)
	}
}

func TestPathLess(t *testing.T) {
	paths := []string{"/a-b", "/a/b", "/", "/a", "/b", "/a/b/c", "/a/a"}
	sort.Slice(paths, func(i, j int) bool { return pathLess(paths[i], paths[j]) })
	want := []string{"/", "/a", "/a/a", "/a/b", "/a/b/c", "/a-b", "/b"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Errorf("sorted %v, want %v", paths, want)
	}
}
