package task

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/inventory"
)

// Inventory labels of a task's VM.
const (
	LabelNamespace = "containerd.namespace"
	LabelID        = "containerd.id"
)

// collectTask removes from the inventory in stateDir ("" means
// inventory.StateDir()) the VMs of containerd task ns/id that no longer
// run, each audited vm.collected first by the same code as `corral gc`
// (audit.Log.CollectVM); vmID, when set, limits it to that machine. A
// task's VM ends with the task, so its entry goes with it rather than
// waiting for `corral gc`.
func collectTask(ns, id, stateDir, vmID string) error {
	if stateDir == "" {
		stateDir = inventory.StateDir()
	}
	vms, err := inventory.List(stateDir)
	if err != nil {
		return err
	}
	var alog *audit.Log
	var errs []error
	for i := range vms {
		v := &vms[i]
		if v.Record == nil || v.State == inventory.Running {
			continue
		}
		if vmID != "" && v.ID != vmID {
			continue
		}
		if v.Record.Labels[LabelNamespace] != ns || v.Record.Labels[LabelID] != id {
			continue
		}
		if alog == nil {
			if alog, err = audit.Open(audit.DefaultPath(stateDir), audit.Options{}); err != nil {
				return fmt.Errorf("shim: %w", err)
			}
		}
		if err := alog.CollectVM(v); err != nil && !errors.Is(err, inventory.ErrRunning) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// stateDirFile, in the bundle, names the inventory directory the runtime
// options chose, for `shim delete` after the serving shim died: it runs
// without the options.
const stateDirFile = "corral-state-dir"

// saveStateDir records dir (when the options name one) in bundle.
func saveStateDir(bundle, dir string) error {
	if dir == "" {
		return nil
	}
	return os.WriteFile(filepath.Join(bundle, stateDirFile), []byte(dir), 0o600)
}

// savedStateDir returns what saveStateDir recorded in bundle, or "" (the
// default state directory).
func savedStateDir(bundle string) string {
	b, err := os.ReadFile(filepath.Join(bundle, stateDirFile))
	if err != nil {
		return ""
	}
	return string(b)
}
