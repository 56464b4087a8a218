package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// State is what became of a machine.
type State string

// The states of a machine.
const (
	// Running: its VMM holds the lock.
	Running State = "running"
	// Ended: its VMM recorded how the machine ended and let go.
	Ended State = "ended"
	// Crashed: its VMM died without recording an end (SIGKILL, OOM,
	// panic): the lock is free but the record does not say it ended.
	Crashed State = "crashed"
	// Corrupt: the record cannot be read; VM.Err says why.
	Corrupt State = "corrupt"
)

// Errors of Resolve and Collect, for callers to branch on.
var (
	ErrNotFound  = errors.New("no such VM")
	ErrAmbiguous = errors.New("ambiguous VM")
	ErrRunning   = errors.New("VM is running")
)

// VM is one machine found in a listing.
type VM struct {
	ID     string  // from the record, else the directory's name
	Dir    string  // its directory
	Owner  int     // the uid that owns the directory
	State  State   // when listed
	Record *Record // nil when State is Corrupt
	Err    error   // why the record cannot be read, for Corrupt
}

// Name returns the record's name, or "".
func (v *VM) Name() string {
	if v.Record == nil {
		return ""
	}
	return v.Record.Name
}

// Age is how long the machine ran (Ended), has run (Running) or ran until
// it was found dead, by the boot-time clock; ok is false when it cannot be
// known (a record of another boot, a corrupt one).
func (v *VM) Age(c Clock, bootID string) (d time.Duration, ok bool) {
	r := v.Record
	if r == nil || r.BootID != bootID {
		return 0, false
	}
	end := c.Boottime()
	if r.Ended != nil {
		end = time.Duration(r.Ended.Boottime)
	}
	d = end - time.Duration(r.Started)
	if d < 0 {
		d = 0
	}
	return d, true
}

// TTLLeft is how much of its TTL a running machine has left (0 once past);
// ok is false without a TTL or an age.
func (v *VM) TTLLeft(c Clock, bootID string) (time.Duration, bool) {
	if v.Record == nil || v.Record.TTL <= 0 || v.State != Running {
		return 0, false
	}
	age, ok := v.Age(c, bootID)
	if !ok {
		return 0, false
	}
	return max(time.Duration(v.Record.TTL)-age, 0), true
}

// List returns the machines registered in stateDirs (StateDir and, for
// root, SearchDirs), newest first. A user sees only the directories they
// own; root sees all. A record that cannot be read is listed as Corrupt
// with the reason; a directory another user keeps private is skipped.
func List(stateDirs ...string) ([]VM, error) {
	euid := os.Geteuid()
	var vms []VM
	for _, sd := range stateDirs {
		dir := VMsDir(sd)
		ents, err := os.ReadDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("inventory: list %s: %w", dir, err)
		}
		for _, de := range ents {
			if !de.IsDir() || strings.HasPrefix(de.Name(), ".") {
				continue
			}
			info, err := de.Info()
			if err != nil {
				continue // collected meanwhile
			}
			owner := int(info.Sys().(*syscall.Stat_t).Uid)
			if euid != 0 && owner != euid {
				continue
			}
			vm, ok := load(filepath.Join(dir, de.Name()), de.Name(), owner)
			if ok {
				vms = append(vms, vm)
			}
		}
	}
	slices.SortStableFunc(vms, func(a, b VM) int {
		var sa, sb Duration
		if a.Record != nil {
			sa = a.Record.Started
		}
		if b.Record != nil {
			sb = b.Record.Started
		}
		if sa != sb {
			if sa > sb {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return vms, nil
}

// load reads one VM directory. The lock is tested before the record is
// read, so a VMM that records its end and lets go in between is not taken
// for a crashed one: once the lock is free the record no longer changes.
func load(dir, name string, owner int) (VM, bool) {
	vm := VM{ID: name, Dir: dir, Owner: owner}
	held, lockErr := lockHeld(dir)
	b, err := os.ReadFile(filepath.Join(dir, RecordFile))
	if errors.Is(err, os.ErrNotExist) && lockErr != nil {
		return vm, false // collected meanwhile
	}
	if err == nil {
		vm.Record, err = ParseRecord(b)
	}
	if err != nil {
		vm.State, vm.Err = Corrupt, fmt.Errorf("%s: %w", filepath.Join(dir, RecordFile), err)
		return vm, true
	}
	vm.ID = vm.Record.ID
	switch {
	case lockErr == nil && held:
		vm.State = Running
	case vm.Record.Ended != nil:
		vm.State = Ended
	case lockErr == nil:
		vm.State = Crashed
	case Alive(vm.Record):
		// The lock cannot be tested (not ours to open): trust the pid
		// with its start time and boot ID.
		vm.State = Running
	default:
		vm.State = Crashed
	}
	return vm, true
}

// lockHeld reports whether someone holds dir's lock, by trying to share it.
func lockHeld(dir string) (bool, error) {
	f, err := os.Open(filepath.Join(dir, LockFile))
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = flock(f, unix.LOCK_SH|unix.LOCK_NB)
	if err == unix.EWOULDBLOCK {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return false, nil // closing f lets go
}

// Resolve finds the one VM that q names: a whole ID, else a name or a
// unique ID prefix. When the name and ID prefixes together match several
// VMs, the error wraps ErrAmbiguous and lists them.
func Resolve(vms []VM, q string) (*VM, error) {
	if q == "" {
		return nil, fmt.Errorf("inventory: %w: empty ID or name", ErrNotFound)
	}
	var match []*VM
	byName, byPrefix := false, false
	for i := range vms {
		v := &vms[i]
		if v.ID == q {
			return v, nil
		}
		n, p := v.Name() == q, strings.HasPrefix(v.ID, q)
		if n || p {
			match = append(match, v)
		}
		byName, byPrefix = byName || n, byPrefix || p
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("inventory: %w: nothing has the ID or name %q", ErrNotFound, q)
	case 1:
		return match[0], nil
	}
	what := "name or ID prefix"
	switch {
	case !byName:
		what = "ID prefix"
	case !byPrefix:
		what = "name"
	}
	slices.SortFunc(match, func(a, b *VM) int { return strings.Compare(a.ID, b.ID) })
	var ids []string
	for _, v := range match {
		s := v.ID
		if v.Name() != "" {
			s += " (" + v.Name() + ")"
		}
		ids = append(ids, s)
	}
	return nil, fmt.Errorf("inventory: %w: %s %q matches %d VMs: %s; give more of the ID",
		ErrAmbiguous, what, q, len(match), strings.Join(ids, ", "))
}

// ClaimCrashReport reports whether the caller is the first to report this
// VM, found crashed, (and so should audit vm.crashed): it creates a marker in the
// VM's directory that later callers find.
func (v *VM) ClaimCrashReport() bool {
	if v.State != Crashed {
		return false
	}
	f, err := os.OpenFile(filepath.Join(v.Dir, crashedFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Collect removes the directory of an ended, crashed or corrupt VM. It
// takes the VM's lock exclusively first, so it fails with ErrRunning if a
// VMM holds it, and calls before (to audit the collection) while it holds
// it; before's error stops the collection.
func Collect(v *VM, before func() error) error {
	f, err := os.Open(filepath.Join(v.Dir, LockFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("inventory: collect %s: %w", v.ID, err)
	}
	if f != nil {
		defer f.Close()
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err == unix.EWOULDBLOCK {
			return fmt.Errorf("inventory: collect %s: %w", v.ID, ErrRunning)
		} else if err != nil {
			return fmt.Errorf("inventory: collect %s: lock: %w", v.ID, err)
		}
	}
	if before != nil {
		if err := before(); err != nil {
			return err
		}
	}
	// Renamed away first, so a removal cut short leaves no half VM in
	// listings (they skip dot names).
	gone := filepath.Join(filepath.Dir(v.Dir), fmt.Sprintf(".gc-%s-%d", filepath.Base(v.Dir), os.Getpid()))
	if err := os.Rename(v.Dir, gone); err != nil {
		return fmt.Errorf("inventory: collect %s: %w", v.ID, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("inventory: collect %s: %w", v.ID, err)
	}
	return nil
}
