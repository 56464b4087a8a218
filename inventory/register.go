package inventory

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Names of the files in a VM's directory.
const (
	RecordFile     = "record.json"
	LockFile       = "lock"
	ConsoleLogFile = "console.log"
	// crashedFile marks a crash that has been reported (audited) once.
	crashedFile = "crash-reported"
)

// Entry is a registered machine: its directory and the lock its VMM holds
// until Close.
type Entry struct {
	dir  string
	lock *os.File

	mu  sync.Mutex
	rec Record
}

// Register creates the VM's directory under stateDir, takes its lock and
// writes r (its Version is set). The directory appears under its ID only
// once locked and recorded, so a listing never sees it half made. The
// caller fills r's identity (ID, PID, PIDStart, BootID, UID, Started);
// Register checks the ID, name and labels.
func Register(stateDir string, r Record) (*Entry, error) {
	if !ValidID(r.ID) {
		return nil, fmt.Errorf("inventory: register: id %q is not %d hex digits", r.ID, IDLen)
	}
	if err := ValidateName(r.Name); err != nil {
		return nil, fmt.Errorf("inventory: register: %w", err)
	}
	for k, v := range r.Labels {
		if err := ValidateLabel(k, v); err != nil {
			return nil, fmt.Errorf("inventory: register: %w", err)
		}
	}
	r.Version = RecordVersion
	vms := VMsDir(stateDir)
	if err := os.MkdirAll(vms, 0o700); err != nil {
		return nil, stateDirError(stateDir, err)
	}
	tmp := filepath.Join(vms, ".new-"+r.ID)
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return nil, stateDirError(stateDir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	lock, err := os.OpenFile(filepath.Join(tmp, LockFile), os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, stateDirError(stateDir, err)
	}
	if err := flock(lock, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("inventory: lock %s: %w", lock.Name(), err)
	}
	if err := writeRecord(tmp, &r); err != nil {
		lock.Close()
		return nil, err
	}
	dir := filepath.Join(vms, r.ID)
	if err := os.Rename(tmp, dir); err != nil {
		lock.Close()
		return nil, fmt.Errorf("inventory: register %s: %w", r.ID, err)
	}
	ok = true
	return &Entry{dir: dir, lock: lock, rec: r}, nil
}

// stateDirError says plainly that the state directory cannot be used, and
// how to choose another.
func stateDirError(stateDir string, err error) error {
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS) {
		return fmt.Errorf("inventory: state directory %s is not writable by uid %d (set $%s to a directory you can write): %w",
			stateDir, os.Geteuid(), StateDirEnv, err)
	}
	return fmt.Errorf("inventory: state directory %s: %w", stateDir, err)
}

// writeRecord replaces dir/record.json atomically: a reader sees the old
// record or the new one, never part of one.
func writeRecord(dir string, r *Record) error {
	b, err := r.Marshal()
	if err != nil {
		return err
	}
	p := filepath.Join(dir, RecordFile)
	tmp := p + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("inventory: write record: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("inventory: write record %s: %w", p, err)
	}
	return nil
}

// flock is unix.Flock on f, retried on EINTR.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

// Dir returns the VM's directory.
func (e *Entry) Dir() string { return e.dir }

// Record returns a copy of the current record.
func (e *Entry) Record() Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.rec
	return r
}

// Update changes the record with f and rewrites it.
func (e *Entry) Update(f func(*Record)) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lock == nil {
		return fmt.Errorf("inventory: update %s: entry closed", e.rec.ID)
	}
	r := e.rec
	f(&r)
	if err := writeRecord(e.dir, &r); err != nil {
		return err
	}
	e.rec = r
	return nil
}

// Close releases the lock; from then on listings show the machine as
// ended (if End was recorded) or crashed. The directory stays until
// collected. Later calls do nothing.
func (e *Entry) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lock == nil {
		return nil
	}
	err := e.lock.Close()
	e.lock = nil
	if err != nil {
		return fmt.Errorf("inventory: release %s: %w", e.dir, err)
	}
	return nil
}
