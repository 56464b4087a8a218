package kernel

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFindNotBuilt(t *testing.T) {
	t.Setenv("CORRAL_CACHE", t.TempDir())
	for _, patched := range []bool{true, false} {
		_, _, err := Find(patched)
		if !errors.Is(err, ErrNotBuilt) {
			t.Errorf("Find(%v) in an empty cache: %v, want ErrNotBuilt", patched, err)
		}
	}
}

// TestFindCached plants files under the key the script computes and checks
// that Find returns them, separately for the patched and plain kernels.
func TestFindCached(t *testing.T) {
	script, err := Script()
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	t.Setenv("CORRAL_CACHE", cache)
	keys := map[bool]string{}
	for _, patched := range []bool{true, false} {
		out, err := exec.Command("bash", scriptArgs(script, patched, "--print-key")...).Output()
		if err != nil {
			t.Skipf("build-kernel.sh --print-key failed (is linux-source-6.1 installed?): %v", err)
		}
		keys[patched] = strings.TrimSpace(string(out))
	}
	if keys[true] == keys[false] || !strings.HasPrefix(keys[true], "patched-") || !strings.HasPrefix(keys[false], "plain-") {
		t.Fatalf("keys: patched %q, plain %q", keys[true], keys[false])
	}
	dir := filepath.Join(cache, "kernel", keys[false])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	paths := "bzImage=" + filepath.Join(dir, "bzImage") + "\nvmlinux=" + filepath.Join(dir, "vmlinux") + "\n"
	for name, data := range map[string]string{"bzImage": "b", "vmlinux": "v", "paths": paths} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bz, vm, err := Find(false)
	if err != nil {
		t.Fatalf("Find(plain): %v", err)
	}
	if bz != filepath.Join(dir, "bzImage") || vm != filepath.Join(dir, "vmlinux") {
		t.Errorf("Find(plain) = %s, %s", bz, vm)
	}
	if _, _, err := Find(true); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Find(patched) with only the plain kernel cached: %v, want ErrNotBuilt", err)
	}
}

func TestParsePaths(t *testing.T) {
	dir := t.TempDir()
	bz, vm := filepath.Join(dir, "bzImage"), filepath.Join(dir, "vmlinux")
	out := []byte("noise\nbzImage=" + bz + "\nvmlinux=" + vm + "\n")
	if _, _, err := parsePaths(out); err == nil {
		t.Error("paths to missing files accepted")
	}
	for _, p := range []string{bz, vm} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	gotBz, gotVm, err := parsePaths(out)
	if err != nil || gotBz != bz || gotVm != vm {
		t.Errorf("parsePaths = %q, %q, %v", gotBz, gotVm, err)
	}
	if _, _, err := parsePaths([]byte("bzImage=" + bz + "\n")); err == nil {
		t.Error("output without vmlinux= accepted")
	}
}

func TestCmdline(t *testing.T) {
	if Cmdline(false) != CmdlinePlain || Cmdline(true) != CmdlineNested {
		t.Error("Cmdline picks the wrong line")
	}
	if strings.Contains(CmdlinePlain, "clearcpuid") || !strings.Contains(CmdlineNested, "noxsave") {
		t.Error("nested-KVM workarounds belong to CmdlineNested only")
	}
}

// TestCmdlineDocumented keeps the two documents that spell out the nested
// command line in step with CmdlineNested.
func TestCmdlineDocumented(t *testing.T) {
	for _, doc := range []string{"../../../docs/nested-kvm.md", "../README.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), CmdlineNested) {
			t.Errorf("%s does not show kernel.CmdlineNested as it is: %q", doc, CmdlineNested)
		}
	}
}
