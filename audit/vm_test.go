package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/corral-vmm/corral/inventory"
)

// TestCollectVM: the shared collection of `corral gc` and the shim
// removes an ended machine and a corrupt one after one vm.collected
// record each, with the VMM's pid, uid, boot ID and host (vmm_host), the
// state and who reported it; a running machine, and one the trail cannot
// record, stay.
func TestCollectVM(t *testing.T) {
	state := t.TempDir()
	ended, err := inventory.Register(state, inventory.Record{ID: "00000000000000e1", Name: "web", PID: 4242, UID: 1234,
		BootID: "boot-1", Host: "vmm-host-a", Labels: map[string]string{"k": "v"}, Ended: &inventory.End{Reason: "poweroff"}})
	if err != nil {
		t.Fatal(err)
	}
	ended.Close()
	running, err := inventory.Register(state, inventory.Record{ID: "00000000000000a1", PID: os.Getpid()})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	corrupt := filepath.Join(inventory.VMsDir(state), "00000000000000c1")
	if err := os.MkdirAll(corrupt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(corrupt, inventory.RecordFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	trail := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := Open(trail, Options{NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	vms, err := inventory.List(state)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]*inventory.VM{}
	for i := range vms {
		byID[vms[i].ID] = &vms[i]
	}
	if err := l.CollectVM(byID["00000000000000a1"]); !errors.Is(err, inventory.ErrRunning) {
		t.Errorf("running VM: %v, want ErrRunning", err)
	}
	// Listed as crashed, but its VMM holds the lock (it started meanwhile).
	stale := *byID["00000000000000a1"]
	stale.State = inventory.Crashed
	if err := l.CollectVM(&stale); !errors.Is(err, inventory.ErrRunning) {
		t.Errorf("locked VM: %v, want ErrRunning", err)
	}
	for _, id := range []string{"00000000000000e1", "00000000000000c1"} {
		if err := l.CollectVM(byID[id]); err != nil {
			t.Errorf("collect %s: %v", id, err)
		}
	}
	left, err := inventory.List(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].ID != "00000000000000a1" {
		t.Errorf("left %+v, want only the running VM", left)
	}
	b, err := os.ReadFile(trail)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) != 2 {
		t.Fatalf("trail has %d records, want 2:\n%s", len(lines), b)
	}
	e, err := Parse(lines[0])
	if err != nil {
		t.Fatal(err)
	}
	if e.Event != "vm.collected" || e.VMID != "00000000000000e1" || e.Name != "web" || e.Labels["k"] != "v" ||
		e.PID != 4242 || e.UID != 1234 || e.BootID != "boot-1" {
		t.Errorf("ended VM's record %+v", e)
	}
	me := strconv.Itoa(os.Getpid())
	for k, want := range map[string]string{"vmm_host": `"vmm-host-a"`, "state": `"ended"`, "dir": strconv.Quote(byID["00000000000000e1"].Dir),
		"reported_by_pid": me, "reported_by_uid": strconv.Itoa(os.Geteuid())} {
		if got := string(e.Fields[k]); got != want {
			t.Errorf("ended VM's %s = %s, want %s", k, got, want)
		}
	}
	e, err = Parse(lines[1])
	if err != nil {
		t.Fatal(err)
	}
	if e.Event != "vm.collected" || e.VMID != "00000000000000c1" || string(e.Fields["state"]) != `"corrupt"` || e.Fields["vmm_host"] != nil {
		t.Errorf("corrupt VM's record %+v", e)
	}

	// A trail that cannot be appended to keeps the machine.
	again, err := inventory.Register(state, inventory.Record{ID: "00000000000000e2", PID: 1})
	if err != nil {
		t.Fatal(err)
	}
	again.Close()
	if err := os.Remove(trail); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(trail, 0o700); err != nil {
		t.Fatal(err)
	}
	v := inventory.VM{ID: "00000000000000e2", Dir: again.Dir(), State: inventory.Crashed, Record: &inventory.Record{ID: "00000000000000e2"}}
	if err := l.CollectVM(&v); err == nil {
		t.Error("collected with the trail unwritable")
	}
	if _, err := os.Stat(again.Dir()); err != nil {
		t.Errorf("machine removed without its record: %v", err)
	}
}
