package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/inventory"
)

// TestCorruptRecordCLI: a VM whose record cannot be read is listed with a
// warning that names the file and what is wrong; stop and kill say the
// same instead of a bare state; gc collects it, audited.
func TestCorruptRecordCLI(t *testing.T) {
	sd, trail := fakeInventory(t)
	fakeVM(t, sd, idWeb, "web", nil, inventory.Running)
	fakeVM(t, sd, idOld, "old", nil, inventory.Ended)
	rec := filepath.Join(inventory.VMsDir(sd), idOld, inventory.RecordFile)
	if err := os.WriteFile(rec, []byte(`{"version":1,"id":`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, stderr := runCLI(t, "ps", "-a")
	if code != exitOK || !strings.Contains(stderr, "corral ps: warning: "+rec+": corrupt record") || !strings.Contains(out, "web") {
		t.Errorf("ps -a with a corrupt record: %d\n%s%s", code, out, stderr)
	}
	for _, cmd := range []string{"stop", "kill"} {
		code, _, stderr := runCLI(t, cmd, "cccc")
		if code != exitNotStopped || !strings.Contains(stderr, "corral "+cmd+": "+rec+": corrupt record") {
			t.Errorf("corral %s of a VM with a corrupt record: %d %q", cmd, code, stderr)
		}
	}
	code, out, stderr = runCLI(t, "gc")
	if code != exitOK || !strings.Contains(out, "collected "+idOld+" - (corrupt)") {
		t.Errorf("gc: %d %q %q", code, out, stderr)
	}
	if ev := trailEvents(t, trail); len(ev) != 1 || ev[0] != "vm.collected "+idOld {
		t.Errorf("trail after gc: %q", ev)
	}
}

// TestAmbiguousPrefixCLI: every command that takes ID|NAME refuses a
// prefix two VMs share, naming both, and acts on neither.
func TestAmbiguousPrefixCLI(t *testing.T) {
	fourVMs(t)
	want := `ID prefix "aaaa" matches 2 VMs: aaaa000000000001 (web), aaaa000000000002 (pg); give more of the ID`
	for _, args := range [][]string{{"stop", "aaaa"}, {"kill", "aaaa"}, {"logs", "aaaa"}, {"inspect", "aaaa"}} {
		code, out, stderr := runCLI(t, args...)
		if code != exitFailure || out != "" || !strings.Contains(stderr, want) {
			t.Errorf("corral %s: %d %q %q", strings.Join(args, " "), code, out, stderr)
		}
	}
	if vms := psJSON(t); len(vms) != 2 {
		t.Errorf("after the refused commands: %d running, want 2", len(vms))
	}
}
