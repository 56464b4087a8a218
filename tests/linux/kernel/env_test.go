package kernel

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeKernels writes a file with a vmlinux's magic, one with a bzImage's and
// a text file.
func fakeKernels(t *testing.T) (vmlinux, bz, text string) {
	t.Helper()
	dir := t.TempDir()
	head := make([]byte, 0x300)
	copy(head[bzHeaderOffset:], bzHeaderMagic)
	for p, b := range map[string][]byte{
		"vmlinux": append([]byte(elfMagic), make([]byte, 60)...),
		"bzImage": head,
		"text":    []byte("console=ttyS0\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "vmlinux"), filepath.Join(dir, "bzImage"), filepath.Join(dir, "text")
}

func TestImageFormat(t *testing.T) {
	vmlinux, bz, text := fakeKernels(t)
	for p, want := range map[string]string{vmlinux: FormatVmlinux, bz: FormatBzImage} {
		if got, err := ImageFormat(p); err != nil || got != want {
			t.Errorf("ImageFormat(%s) = %q, %v, want %q", p, got, err, want)
		}
	}
	if _, err := ImageFormat(text); !errors.Is(err, ErrNotKernel) {
		t.Errorf("ImageFormat(text) err %v, want ErrNotKernel", err)
	}
	if _, err := ImageFormat(filepath.Join(t.TempDir(), "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ImageFormat(absent) err %v, want ErrNotExist", err)
	}
}

func TestFromEnv(t *testing.T) {
	vmlinux, bz, text := fakeKernels(t)
	env := func(kv map[string]string) func(string) string {
		return func(k string) string { return kv[k] }
	}
	if _, ok, err := FromEnv(env(map[string]string{BzImageEnv: bz})); ok || err != nil {
		t.Errorf("without $%s: ok %v err %v, want neither", KernelEnv, ok, err)
	}
	for _, c := range []struct {
		name string
		kv   map[string]string
		want Given
	}{
		{"vmlinux and bzImage", map[string]string{KernelEnv: vmlinux, BzImageEnv: bz, ExtraCmdlineEnv: " nopv "},
			Given{Vmlinux: vmlinux, BzImage: bz, Extra: "nopv"}},
		{"vmlinux only", map[string]string{KernelEnv: vmlinux}, Given{Vmlinux: vmlinux}},
		{"bzImage as the kernel", map[string]string{KernelEnv: bz}, Given{BzImage: bz}},
	} {
		g, ok, err := FromEnv(env(c.kv))
		if !ok || err != nil || g != c.want {
			t.Errorf("%s: %+v ok %v err %v, want %+v", c.name, g, ok, err, c.want)
		}
	}
	for name, kv := range map[string]map[string]string{
		"text kernel":        {KernelEnv: text},
		"vmlinux as bzImage": {KernelEnv: vmlinux, BzImageEnv: vmlinux},
		"missing bzImage":    {KernelEnv: vmlinux, BzImageEnv: bz + ".gone"},
	} {
		if _, ok, err := FromEnv(env(kv)); !ok || err == nil {
			t.Errorf("%s: ok %v err %v, want ok and an error", name, ok, err)
		}
	}
}

func TestAppendCmdline(t *testing.T) {
	if got := AppendCmdline(CmdlinePlain, ""); got != CmdlinePlain {
		t.Errorf("no extra: %q", got)
	}
	if got := AppendCmdline(CmdlinePlain, "nopv"); got != CmdlinePlain+" nopv" {
		t.Errorf("extra: %q", got)
	}
}
