package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrors(t *testing.T) {
	notKernel := filepath.Join(t.TempDir(), "x")
	os.WriteFile(notKernel, []byte("hello world, not a kernel"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "Usage:"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"run"}, "no kernel given"},
		{[]string{"run", "--kernel", "/nonexistent"}, "no such file"},
		{[]string{"run", "--kernel", notKernel}, "not a Linux bzImage or PVH ELF"},
		{[]string{"run", "--kernel", notKernel, "--memory", "lots"}, "--memory"},
		{[]string{"run", "--kernel", notKernel, "--cpus", "0"}, ""},
		{[]string{"run", "--bogus"}, "flag provided but not defined"},
		{[]string{"run", "--kernel", notKernel, "extra"}, "unexpected argument"},
		{[]string{"dhcp"}, "corral dhcp replay"},
	}
	for _, c := range cases {
		code, _, stderr := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("corral %q: status %d, stderr %q; want %d mentioning %q", c.args, code, stderr, exitUsage, c.want)
		}
	}
}

func TestHelpDocumentsEverything(t *testing.T) {
	code, out, _ := runCLI(t, "--help")
	if code != exitOK {
		t.Fatalf("--help: status %d", code)
	}
	for _, w := range []string{"--kernel", "--initrd", "--cmdline", "--cpus", "--memory", "Ctrl-A", "125", "126", "debug-exit"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q", w)
		}
	}
}

// TestRunGuestExitStatus boots the hello guest through the CLI and checks
// that its output reaches stdout and its debug-exit code becomes the status.
func TestRunGuestExitStatus(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "hello")
	code, out, stderr := runCLI(t, "run", "--kernel", k, "--cmdline", "exit=42", "--memory", "64M")
	if code != 42 {
		t.Fatalf("status %d, want 42; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(out, "corral-guest: hello") {
		t.Errorf("stdout lacks the guest's output:\n%s", out)
	}
	code, _, stderr = runCLI(t, "run", "--kernel", guests.BuildT(t, "fault"))
	if code != exitOK {
		t.Errorf("triple-faulting guest (a reset): status %d, want 0; stderr:\n%s", code, stderr)
	}
}
