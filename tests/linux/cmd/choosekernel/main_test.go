package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/tests/linux/kernel"
)

// TestWriteEvaluates has bash evaluate the output, with a reason holding
// quotes and shell syntax, and checks every variable round-trips.
func TestWriteEvaluates(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	c := kernel.Choice{Patched: true, Reason: `it's "nested" $(false); echo x`}
	var out strings.Builder
	if err := write(&out, c, "/cache/bz Image", "/cache/vmlinux"); err != nil {
		t.Fatal(err)
	}
	script := out.String() + `printf '%s|%s|%s|%s|%s|%s' "$KERNEL_KIND" "$KERNEL_REASON" "$KERNEL_CMDLINE" "$KERNEL_QEMU_CPU" "$KERNEL_VMLINUX" "$KERNEL_BZIMAGE"`
	got, err := exec.Command(bash, "-euc", script).Output()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out.String())
	}
	want := strings.Join([]string{"patched", c.Reason, kernel.CmdlineNested, kernel.QEMUCPUNested, "/cache/vmlinux", "/cache/bz Image"}, "|")
	if string(got) != want {
		t.Errorf("evaluated to\n%q, want\n%q", got, want)
	}
}

func TestWriteRuleOnly(t *testing.T) {
	var out strings.Builder
	if err := write(&out, kernel.Choice{Reason: "r"}, "", ""); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Contains(s, "KERNEL_VMLINUX") || !strings.Contains(s, "KERNEL_CMDLINE='"+kernel.CmdlinePlain+"'\n") ||
		!strings.Contains(s, "KERNEL_QEMU_CPU='host'\n") {
		t.Errorf("rule-only output:\n%s", s)
	}
}
