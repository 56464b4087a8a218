package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"
)

func TestResolveHostFiles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "tool.conf")
	if err := os.WriteFile(conf, []byte("setting = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// /bin/true is a dynamically linked executable on Debian: it brings the
	// dynamic loader and libc; the text file comes alone.
	files, err := resolveHostFiles("true, " + conf + ",,true")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]vmFile{}
	for _, f := range files {
		if _, dup := got[f.VM]; dup {
			t.Errorf("%s shipped twice", f.VM)
		}
		got[f.VM] = f
	}
	if f, ok := got[conf]; !ok || f.Perm != 0o600 {
		t.Errorf("%s: %+v, want it at its own path with mode 0600", conf, f)
	}
	var libc, interp, tru bool
	for vm, f := range got {
		switch {
		case strings.HasSuffix(vm, "/true"):
			tru = f.Perm&0o111 != 0
		case strings.HasSuffix(vm, "/libc.so.6"):
			libc = true
		case strings.HasPrefix(filepath.Base(vm), "ld-linux"):
			interp = true
		}
	}
	if !tru || !libc || !interp {
		t.Errorf("true: executable %v, libc.so.6 %v, dynamic loader %v; files %v", tru, libc, interp, files)
	}
	if len(files) > 8 {
		t.Errorf("%d files for true and a text file: %v", len(files), files)
	}

	if _, err := resolveHostFiles("no-such-command-here"); err == nil || !strings.Contains(err.Error(), "no-such-command-here") {
		t.Errorf("a missing command: err %v, want one naming it", err)
	}
	if _, err := resolveHostFiles(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: err %v, want ErrNotExist", err)
	}
}

func TestBzImageBeside(t *testing.T) {
	dir := t.TempDir()
	vmlinux := filepath.Join(dir, "vmlinux")
	for _, p := range []string{vmlinux, filepath.Join(dir, "other")} {
		if err := os.WriteFile(p, []byte("k"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := bzImageBeside(vmlinux); got != "" {
		t.Errorf("no bzImage yet: bzImageBeside = %q", got)
	}
	bz := filepath.Join(dir, "bzImage")
	if err := os.WriteFile(bz, []byte("bz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := bzImageBeside(vmlinux); got != bz {
		t.Errorf("bzImageBeside(vmlinux) = %q, want %q", got, bz)
	}
	for _, k := range []string{"", filepath.Join(dir, "other"), bz} {
		if got := bzImageBeside(k); got != "" {
			t.Errorf("bzImageBeside(%q) = %q, want none (not a build-kernel.sh vmlinux)", k, got)
		}
	}
}

func TestInitramfsBzImageAndHostFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, m := range modules {
		write(m+".ko", "module")
	}
	spec := initramfsSpec{Busybox: write("busybox", "bb"), Kernel: l1Kernel{ModDir: dir},
		LinuxKernel: write("vmlinux", "kernel"), LinuxBzImage: write("bzImage", "bz"),
		HostFiles: []vmFile{{VM: "/usr/sbin/tool", Host: write("tool", "tool"), Perm: 0o755},
			{VM: "/lib/x86_64-linux-gnu/libx.so.1", Host: write("libx", "lib"), Perm: 0o755}}}
	var buf bytes.Buffer
	if err := writeInitramfs(&buf, spec); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	mode := map[string]uint64{}
	r := cpio.Newc.Reader(bytes.NewReader(buf.Bytes()))
	for {
		rec, err := r.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Mode&cpio.S_IFMT == cpio.S_IFREG {
			b, _ := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
			got[rec.Name], mode[rec.Name] = string(b), rec.Mode&0o777
		}
	}
	for name, want := range map[string]string{"linux/vmlinux": "kernel", "linux/bzImage": "bz",
		"usr/sbin/tool": "tool", "lib/x86_64-linux-gnu/libx.so.1": "lib"} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	if mode["usr/sbin/tool"] != 0o755 {
		t.Errorf("usr/sbin/tool mode %o, want 755", mode["usr/sbin/tool"])
	}
	if !strings.Contains(got["init"], "export CORRAL_BZIMAGE=/linux/bzImage\n") {
		t.Errorf("init does not export CORRAL_BZIMAGE:\n%s", got["init"])
	}
	if strings.Contains(initScript(initramfsSpec{LinuxKernel: "/k/vmlinux"}), "CORRAL_BZIMAGE") {
		t.Error("init exports CORRAL_BZIMAGE without a bzImage")
	}
}
