package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// fakeQEMU lays out dir/usr/bin/qemu-fake (a copy of a dynamically linked
// host binary), a link to it at dir/link/qemu, and a data directory with
// bios-microvm.bin linking to qboot.rom, as Debian has it, and pvh.bin.
func fakeQEMU(t *testing.T) (dir, bin string) {
	t.Helper()
	src, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) on PATH")
	}
	if deps, err := elfDeps(src); err != nil || len(deps) == 0 {
		t.Skipf("%s is not a dynamically linked ELF file (%v)", src, err)
	}
	dir = t.TempDir()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "usr/bin/qemu-fake")
	for p, b := range map[string][]byte{bin: data, filepath.Join(dir, "usr/share/qemu/qboot.rom"): []byte("qboot"),
		filepath.Join(dir, "usr/share/qemu/pvh.bin"): []byte("pvh")} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("qboot.rom", filepath.Join(dir, "usr/share/qemu/bios-microvm.bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "link"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "link/qemu")); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}

func TestQEMUFiles(t *testing.T) {
	dir, bin := fakeQEMU(t)
	// Asked for through a link, QEMU goes in at its real path: it finds
	// its data directory from /proc/self/exe.
	files, gotBin, missing, err := qemuFiles(filepath.Join(dir, "link/qemu"))
	if err != nil {
		t.Fatal(err)
	}
	if gotBin != bin {
		t.Errorf("bin = %s, want %s", gotBin, bin)
	}
	byVM := map[string]vmFile{}
	for _, f := range files {
		if _, dup := byVM[f.VM]; dup {
			t.Errorf("%s listed twice", f.VM)
		}
		byVM[f.VM] = f
	}
	if f := byVM[bin]; f.Host != bin || f.Perm&0o111 == 0 {
		t.Errorf("binary = %+v, want %s, executable", f, bin)
	}
	deps, err := elfDeps(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range deps {
		if _, ok := byVM[d]; !ok {
			t.Errorf("library or interpreter %s not shipped", d)
		}
	}
	for _, fw := range []string{"bios-microvm.bin", "pvh.bin", "qboot.rom"} {
		p := filepath.Join(dir, "usr/share/qemu", fw)
		f, ok := byVM[p]
		if !ok || f.Host != p || f.Perm != 0o644 {
			t.Errorf("firmware %s = %+v (listed %v), want at %s", fw, f, ok, p)
		}
	}
	if want := []string{"bios-256k.bin", "kvmvapic.bin", "linuxboot_dma.bin"}; !slices.Equal(missing, want) {
		t.Errorf("missing = %q, want %q", missing, want)
	}
	if len(files) != 1+len(deps)+3 {
		t.Errorf("%d files, want the binary, %d dependencies and 3 firmware files: %+v", len(files), len(deps), files)
	}
}

func TestQEMUFilesNotFound(t *testing.T) {
	_, _, _, err := qemuFiles(filepath.Join(t.TempDir(), "no-qemu"))
	if err == nil || !strings.Contains(err.Error(), "-l2-qemu") {
		t.Errorf("err = %v, want one naming -l2-qemu", err)
	}
}

// TestQEMUFilesRunInChroot ships the host's real QEMU into an empty root
// as the initramfs would and runs it there: the list is complete if QEMU
// starts (it loads every library before main) and the microvm and qboot
// firmware are in its data directory.
func TestQEMUFilesRunInChroot(t *testing.T) {
	testenv.MustHaveRoot(t)
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		testenv.Missing(t, testenv.Tools, "needs qemu-system-x86_64 (apt-get install qemu-system-x86)")
	}
	files, bin, _, err := qemuFiles("qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, f := range files {
		data, err := os.ReadFile(f.Host)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(root, f.VM)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, os.FileMode(f.Perm)); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("chroot", root, bin, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "QEMU emulator version") {
		t.Fatalf("chroot %s %s --version: %v\n%s", root, bin, err, out)
	}
	for _, fw := range []string{"bios-microvm.bin", "qboot.rom", "pvh.bin"} {
		if _, err := os.Stat(filepath.Join(root, filepath.Dir(bin), "../share/qemu", fw)); err != nil {
			t.Errorf("firmware: %v", err)
		}
	}
}

func TestMergeFiles(t *testing.T) {
	a := []vmFile{{VM: "/a", Host: "/h/a"}, {VM: "/b", Host: "/h/b"}}
	got := mergeFiles(a, []vmFile{{VM: "/b", Host: "/other/b"}, {VM: "/c", Host: "/h/c"}, {VM: "/c", Host: "/h/c2"}})
	want := []vmFile{{VM: "/a", Host: "/h/a"}, {VM: "/b", Host: "/h/b"}, {VM: "/c", Host: "/h/c"}}
	if !slices.Equal(got, want) {
		t.Errorf("mergeFiles = %+v, want %+v", got, want)
	}
}

func TestInitramfsExportsQEMU(t *testing.T) {
	if init := initScript(initramfsSpec{QEMU: "/usr/bin/qemu-system-x86_64"}); !strings.Contains(init, "export QEMU='/usr/bin/qemu-system-x86_64'\n") {
		t.Errorf("init does not export $QEMU:\n%s", init)
	}
	if init := initScript(initramfsSpec{}); strings.Contains(init, "QEMU") {
		t.Errorf("init exports a QEMU it was not given:\n%s", init)
	}
}
