package rootfs

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteInitramfs checks the file holds BuildInitramfs's archive and that
// TempInitramfs puts it in a directory of its own.
func TestWriteInitramfs(t *testing.T) {
	requireBusybox(t)
	opts := InitramfsOptions{Script: "exit 3\n", NoDHCP: true}
	var want bytes.Buffer
	if err := BuildInitramfs(&want, opts); err != nil {
		t.Fatal(err)
	}
	p := TempInitramfs(t, opts)
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("%s: %d bytes, want the %d-byte archive BuildInitramfs writes", p, len(got), want.Len())
	}
	if q := TempInitramfs(t, opts); filepath.Dir(q) == filepath.Dir(p) {
		t.Errorf("two initramfs files in one directory: %s, %s", p, q)
	}
}

func TestWriteInitramfsErrors(t *testing.T) {
	if err := WriteInitramfs(filepath.Join(t.TempDir(), "missing", "x.cpio"), InitramfsOptions{}); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
	p := filepath.Join(t.TempDir(), "x.cpio")
	if err := WriteInitramfs(p, InitramfsOptions{Busybox: filepath.Join(t.TempDir(), "no-busybox")}); err == nil {
		t.Error("a missing busybox was accepted")
	}
}
