package rootfs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// WriteInitramfs writes BuildInitramfs's archive to a new file at path.
func WriteInitramfs(path string, opts InitramfsOptions) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := BuildInitramfs(f, opts); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	return nil
}

// TempInitramfs writes the initramfs for opts into the test's temporary
// directory and returns its path; it fails the test on an error.
func TempInitramfs(t testing.TB, opts InitramfsOptions) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "initramfs.cpio")
	if err := WriteInitramfs(p, opts); err != nil {
		t.Fatal(err)
	}
	return p
}
