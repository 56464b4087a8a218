package audit

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/corral-vmm/corral/inventory"
)

// AppendVM appends event about v, a machine this process found in a
// listing (not its own): the record's pid, uid and boot ID are its VMM's,
// vmm_host is the host its VMM ran on, state is v.State, and
// reported_by_pid and reported_by_uid say who found it. `corral ps`,
// `corral gc` and the containerd shim all write these records this way.
func (l *Log) AppendVM(v *inventory.VM, event string, attrs ...slog.Attr) error {
	e := Event{Event: event, VMID: v.ID}
	attrs = append([]slog.Attr(nil), attrs...)
	if r := v.Record; r != nil {
		e = ForRecord(r, event)
		e.PID, e.UID, e.BootID = r.PID, r.UID, r.BootID
		attrs = append(attrs, slog.String("vmm_host", r.Host))
	}
	attrs = append(attrs, slog.String("state", string(v.State)),
		slog.Int("reported_by_pid", os.Getpid()), slog.Int("reported_by_uid", os.Geteuid()))
	return l.Append(e, attrs...)
}

// CollectVM removes the directory of v, an ended, crashed or corrupt
// machine (inventory.Collect), auditing vm.collected (AppendVM, with its
// directory as dir) while it holds the machine's lock, before anything is
// removed: a machine the trail cannot record stays. A machine listed as
// running, or whose VMM holds its lock, is left alone with an error that
// wraps inventory.ErrRunning. It lives here, not in inventory, because
// this package imports inventory.
func (l *Log) CollectVM(v *inventory.VM) error {
	if v.State == inventory.Running {
		return fmt.Errorf("inventory: collect %s: %w", v.ID, inventory.ErrRunning)
	}
	return inventory.Collect(v, func() error {
		return l.AppendVM(v, "vm.collected", slog.String("dir", v.Dir))
	})
}
