package corral

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/inventory"
	"golang.org/x/sys/unix"
)

// registration is a started machine's place in the inventory and its
// audit trail.
type registration struct {
	entry *inventory.Entry
	audit *audit.Log
}

// InventoryDir returns the machine's directory in the inventory (record,
// console log, lock), or "" when it is not registered: before Start, or
// with Config.NoInventory. It stays valid after the machine ends, until
// `corral gc` collects it.
func (m *Machine) InventoryDir() string {
	if r := m.reg.Load(); r != nil {
		return r.entry.Dir()
	}
	return ""
}

// InventoryRecord returns a copy of the machine's inventory record; ok is
// false when it is not registered.
func (m *Machine) InventoryRecord() (r inventory.Record, ok bool) {
	if reg := m.reg.Load(); reg != nil {
		return reg.entry.Record(), true
	}
	return r, false
}

// UpdateInventory changes the machine's inventory record with f (for
// instance its TTL) and rewrites it. It does nothing when the machine is
// not registered.
func (m *Machine) UpdateInventory(f func(*inventory.Record)) error {
	if reg := m.reg.Load(); reg != nil {
		return reg.entry.Update(f)
	}
	return nil
}

// Audit appends an event about this machine to the audit trail (with its
// ID, name, labels, pid, uid, host and boot ID) and syncs it before
// returning, so the caller can then act on the event. It does nothing
// when the machine is not registered (before Start, Config.NoInventory).
func (m *Machine) Audit(event string, attrs ...slog.Attr) error {
	reg := m.reg.Load()
	if reg == nil {
		return nil
	}
	rec := reg.entry.Record()
	return reg.audit.Append(audit.ForRecord(&rec, event), attrs...)
}

// validateInventory checks the inventory fields of the configuration.
func (c *Config) validateInventory() error {
	if err := inventory.ValidateName(c.Name); err != nil {
		return err
	}
	for k, v := range c.Labels {
		if err := inventory.ValidateLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}

// register puts the started machine in the inventory, keeps its console
// log there, and audits vm.created and vm.started, each synced before the
// vCPUs run.
func (m *Machine) register() (err error) {
	if m.cfg.NoInventory {
		return nil
	}
	stateDir := m.cfg.StateDir
	if stateDir == "" {
		stateDir = inventory.StateDir()
	}
	alog, err := audit.Open(audit.DefaultPath(stateDir), audit.Options{})
	if err != nil {
		return fmt.Errorf("corral: %w", err)
	}
	rec, err := m.inventoryRecord()
	if err != nil {
		return err
	}
	entry, err := inventory.Register(stateDir, rec)
	if err != nil {
		return fmt.Errorf("corral: %w", err)
	}
	defer func() {
		if err != nil {
			m.plat.conTee.setLog("")
			entry.Update(func(r *inventory.Record) {
				r.Ended = &inventory.End{Reason: "start-failed", Detail: err.Error(), Time: time.Now(),
					Boottime: inventory.Duration(inventory.SystemClock{}.Boottime())}
			})
			entry.Close()
		}
	}()
	if err := m.plat.conTee.setLog(filepath.Join(entry.Dir(), inventory.ConsoleLogFile)); err != nil {
		return err
	}
	reg := &registration{entry: entry, audit: alog}
	ev := func(name string, attrs ...slog.Attr) error {
		r := entry.Record()
		if err := alog.Append(audit.ForRecord(&r, name), attrs...); err != nil {
			return fmt.Errorf("corral: %w", err)
		}
		return nil
	}
	var nics []any
	for _, n := range rec.NICs {
		nics = append(nics, map[string]string{"tap": n.Tap, "mac": n.MAC, "host": n.Host, "address": n.Guest})
	}
	if err := ev("vm.created", slog.String("kernel", rec.Kernel), slog.String("kernel_sha256", rec.KernelSHA256),
		slog.Int("cpus", rec.CPUs), slog.Uint64("memory", rec.Memory), slog.Any("disks", rec.Disks),
		slog.Any("nics", nics), slog.String("dir", entry.Dir())); err != nil {
		return err
	}
	if m.restored != nil {
		if err := ev("vm.restored", slog.String("snapshot", m.restored.dir), slog.String("source_id", m.restored.saved.SourceID)); err != nil {
			return err
		}
	}
	if err := ev("vm.started"); err != nil {
		return err
	}
	m.reg.Store(reg)
	return nil
}

// unregister audits vm.ended with how the machine ended, records it, and
// lets go of the lock, after everything else is released.
func (m *Machine) unregister(e Exit) {
	reg := m.reg.Load()
	if reg == nil {
		return
	}
	code := 0
	if e.Reason == ExitDebug {
		code = int(e.Code)
	}
	attrs := []slog.Attr{slog.Group("exit", slog.String("reason", e.Reason.String()), slog.Int("code", code))}
	if e.Detail != "" {
		attrs = append(attrs, slog.String("detail", e.Detail))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	clk := inventory.SystemClock{}
	end := &inventory.End{Reason: e.Reason.String(), Code: code, Detail: e.Detail, Time: clk.Now(), Boottime: inventory.Duration(clk.Boottime())}
	if e.Err != nil {
		end.Detail = e.String()
	}
	rec := reg.entry.Record()
	attrs = append(attrs, slog.String("duration", time.Duration(end.Boottime-rec.Started).String()))
	var errs []error
	errs = append(errs, m.Audit("vm.ended", attrs...))
	errs = append(errs, m.plat.conTee.setLog(""))
	errs = append(errs, reg.entry.Update(func(r *inventory.Record) { r.Ended = end }))
	errs = append(errs, reg.entry.Close())
	if err := errors.Join(errs...); err != nil {
		m.log.Error("vm.unregister", "id", m.id, "err", err)
	}
}

// inventoryRecord describes the machine for the inventory.
func (m *Machine) inventoryRecord() (inventory.Record, error) {
	clk := inventory.SystemClock{}
	pid := os.Getpid()
	start, err := inventory.ProcStart(pid)
	if err != nil {
		return inventory.Record{}, fmt.Errorf("corral: %w", err)
	}
	boot, err := inventory.BootID()
	if err != nil {
		return inventory.Record{}, fmt.Errorf("corral: %w", err)
	}
	host, _ := os.Hostname()
	r := inventory.Record{
		ID: m.id, Name: m.cfg.Name, Labels: m.cfg.Labels,
		PID: pid, PIDStart: start, BootID: boot, UID: os.Geteuid(), Host: host,
		Kernel: absPath(m.cfg.Kernel), Cmdline: m.cfg.Cmdline,
		CPUs: m.cfg.cpus(), Memory: m.cfg.memory(),
		Created: clk.Now(), Started: inventory.Duration(clk.Boottime()),
		TTL: inventory.Duration(m.cfg.TTL),
	}
	if m.cfg.Initrd != "" {
		r.Initrd = absPath(m.cfg.Initrd)
	}
	if m.restored != nil {
		// The guest was booted from the kernel the snapshot names, which
		// need not exist here any more.
		r.KernelSHA256, r.Snapshot = m.restored.saved.KernelSHA256, m.restored.dir
	} else if r.KernelSHA256, err = m.kernelSHA256(); err != nil {
		return r, err
	}
	for _, d := range m.cfg.Disks {
		r.Disks = append(r.Disks, inventory.Disk{Path: absPath(d.Path), ReadOnly: d.ReadOnly})
	}
	for _, n := range m.Networks() {
		nic := inventory.NIC{Tap: n.Tap, MAC: n.MAC.String()}
		if n.Host.IsValid() {
			nic.Host = n.Host.String()
		}
		if n.Guest.IsValid() {
			nic.Guest = n.Guest.String()
		}
		r.NICs = append(r.NICs, nic)
	}
	return r, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// consoleLogMax is the size at which the console log is rotated (to
// console.log.1, replacing it): a chatty guest keeps at most twice this.
const consoleLogMax = 8 << 20

// consoleTee is what the serial port writes to: the user's Console, and
// once the machine is registered its console log. The log is written
// first and never holds the guest (a regular file on the state
// directory); its failure stops only the logging.
type consoleTee struct {
	out io.Writer // Config.Console (or the platform's copy of it); nil discards

	mu      sync.Mutex
	log     *os.File
	logPath string
	logged  int64
}

// Write logs p and passes it on.
func (t *consoleTee) Write(p []byte) (int, error) {
	t.mu.Lock()
	if t.log != nil {
		if _, err := t.log.Write(p); err != nil {
			t.log.Close()
			t.log = nil
		} else if t.logged += int64(len(p)); t.logged >= consoleLogMax {
			t.rotate()
		}
	}
	t.mu.Unlock()
	if t.out == nil {
		return len(p), nil
	}
	return t.out.Write(p)
}

// rotate moves the full log to .1 and starts a new one.
func (t *consoleTee) rotate() {
	t.log.Close()
	t.log = nil
	if os.Rename(t.logPath, t.logPath+".1") != nil {
		return
	}
	if f, err := os.OpenFile(t.logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600); err == nil {
		t.log, t.logged = f, 0
	}
}

// SetWriteDeadline passes deadlines to the user's Console, so the serial
// port can still cut a blocked write short.
func (t *consoleTee) SetWriteDeadline(d time.Time) error {
	if w, ok := t.out.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return w.SetWriteDeadline(d)
	}
	return os.ErrNoDeadline
}

// setLog starts logging to path ("" stops and closes the log).
func (t *consoleTee) setLog(path string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.log != nil {
		t.log.Close()
		t.log = nil
	}
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("corral: console log: %w", err)
	}
	t.log, t.logPath, t.logged = f, path, 0
	return nil
}
