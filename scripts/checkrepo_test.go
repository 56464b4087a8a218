// Package scripts holds tests of the shell scripts in this directory.
package scripts

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// fakeELF starts like an x86-64 executable; the NUL bytes make git call it
// binary, as it does a real one.
var fakeELF = append([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0}, make([]byte, 100)...)

func gitRepo(t *testing.T, files map[string][]byte) string {
	t.Helper()
	git := testenv.MustHaveCommand(t, "git", "git")
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(git, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("init", "-q")
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run("add", "-A")
	return dir
}

func checkRepo(t *testing.T, dir string) (string, error) {
	t.Helper()
	testenv.MustHaveCommand(t, "bash", "bash")
	out, err := exec.Command("bash", "check-repo.sh", dir).CombinedOutput()
	return string(out), err
}

func TestCheckRepo(t *testing.T) {
	const limit = 1000 * 1000
	dir := gitRepo(t, map[string][]byte{
		"README":                   []byte("text\n"),
		"bin/tool":                 fakeELF,
		"dhcp/dhcp test":           fakeELF, // a name with a space
		"data/big.bin":             bytes.Repeat([]byte("x"), limit+1),
		"data/just-fits.bin":       bytes.Repeat([]byte("x"), limit),
		"data/zeros.bin":           make([]byte, 4096), // binary, not ELF
		"boot/testdata/elf":        fakeELF,
		"boot/testdata/big-corpus": bytes.Repeat([]byte("y"), 2*limit),
		"testdata/top-level-elf":   fakeELF,
	})
	// Untracked files do not count; a tracked file removed from the work
	// tree still does (the check reads the index).
	if err := os.WriteFile(filepath.Join(dir, "untracked.elf"), fakeELF, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "bin/tool")); err != nil {
		t.Fatal(err)
	}
	out, err := checkRepo(t, dir)
	if err == nil {
		t.Fatalf("check passed a repository with an ELF and a big file:\n%s", out)
	}
	for _, want := range []string{"bin/tool is an ELF binary", "dhcp/dhcp test is an ELF binary", "data/big.bin is 1000001 bytes", "FAIL"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"just-fits", "zeros", "testdata/elf", "big-corpus", "top-level-elf", "untracked", "README"} {
		if strings.Contains(out, not) {
			t.Errorf("output flags %s:\n%s", not, out)
		}
	}

	clean := gitRepo(t, map[string][]byte{"README": []byte("text\n"), "boot/testdata/elf": fakeELF})
	if out, err := checkRepo(t, clean); err != nil || !strings.Contains(out, "check-repo: ok (2 tracked files") {
		t.Errorf("clean repository: %v\n%s", err, out)
	}
}
