package guests

import (
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// TestQEMUCount runs the count scenarios under QEMU: KVM when there is
// one, else TCG (the guest needs no KVM timing).
func TestQEMUCount(t *testing.T) {
	qemu := testenv.MustHaveQEMU(t)
	kernel := BuildT(t, "count")
	for _, sc := range CountScenarios() {
		t.Run(sc.Name, func(t *testing.T) {
			lines, status := runQEMU(t, qemu, qemuRun{machine: "microvm", kernel: kernel, cmdline: sc.Cmdline, tcg: true})
			if want := QEMUStatus(sc.Exit); status != want {
				t.Errorf("qemu status %d, want %d (guest exit %d)", status, want, sc.Exit)
			}
			wantReadyFirst(t, lines)
			if err := sc.Verify(strings.Join(lines, "\n")); err != nil {
				t.Error(err)
			}
		})
	}
}
