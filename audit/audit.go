// Package audit keeps Corral's audit trail: an append-only JSON Lines file
// with one record per lifecycle event of a machine (vm.created,
// vm.started, vm.ended, vm.crashed, vm.collected, ...), each appended with
// a single O_APPEND write and synced before the event is acted on, so
// records of concurrent VMMs never interleave and none is lost to a crash
// after the act. When the systemd journal runs, every record is mirrored
// to it as structured fields (journalctl CORRAL_VM_ID=...).
package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/corral-vmm/corral/inventory"
	"golang.org/x/sys/unix"
)

// Env names the environment variable that overrides the trail's path.
const Env = "CORRAL_AUDIT_LOG"

// RootPath is root's audit trail.
const RootPath = "/var/log/corral/audit.jsonl"

// DefaultPath returns the trail's path: $CORRAL_AUDIT_LOG if set, else
// RootPath for root, else audit.jsonl in stateDir (inventory.StateDir
// when empty).
func DefaultPath(stateDir string) string {
	if p := os.Getenv(Env); p != "" {
		return p
	}
	if os.Geteuid() == 0 {
		return RootPath
	}
	if stateDir == "" {
		stateDir = inventory.StateDir()
	}
	return filepath.Join(stateDir, "audit.jsonl")
}

// MaxRecord bounds one record's encoded size.
const MaxRecord = 64 << 10

// Event is one audit record. Time is the wall clock, for people; Boottime
// (CLOCK_BOOTTIME) with BootID is what `corral events --since` compares.
// Fields holds what the event is about (exit code, TAP, address...),
// written at the top level of the JSON object after the fixed keys.
type Event struct {
	Time     time.Time         `json:"time"`
	Event    string            `json:"event"`
	VMID     string            `json:"vm_id"`
	Name     string            `json:"name,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	UID      int               `json:"uid"`
	PID      int               `json:"pid"`
	Host     string            `json:"host"`
	BootID   string            `json:"boot_id"`
	Boottime int64             `json:"boottime_ns"`

	Fields map[string]json.RawMessage `json:"-"`
}

// reserved are Event's own keys; an attribute of the same name is written
// as "x_"+name instead of shadowing it.
var reserved = map[string]bool{"time": true, "event": true, "vm_id": true, "name": true, "labels": true,
	"uid": true, "pid": true, "host": true, "boot_id": true, "boottime_ns": true}

// Log appends to one audit trail. It opens the file for each record, so a
// rotated trail (logrotate's move and create) is followed at once.
type Log struct {
	path  string
	clock inventory.Clock

	mu      sync.Mutex
	journal slog.Handler // nil: no journal
}

// Options adjust a Log; the zero value is the system's clocks and journal.
type Options struct {
	// Clock stamps records; nil means inventory.SystemClock.
	Clock inventory.Clock
	// NoJournal leaves the systemd journal out.
	NoJournal bool
}

// Open returns the trail at path, creating its directory. It checks at
// once that the file can be appended to, so an unwritable trail is found
// before any machine runs.
func Open(path string, opts Options) (*Log, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, trailError(path, err)
	}
	f, err := openAppend(path)
	if err != nil {
		return nil, err
	}
	f.Close()
	l := &Log{path: path, clock: opts.Clock}
	if l.clock == nil {
		l.clock = inventory.SystemClock{}
	}
	if !opts.NoJournal {
		l.journal = newJournal()
	}
	return l, nil
}

// Path returns the trail's path.
func (l *Log) Path() string { return l.path }

func openAppend(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, trailError(path, err)
	}
	return f, nil
}

// trailError says plainly that the trail cannot be written (permissions,
// a read-only file system, its directory included), with the way out.
func trailError(path string, err error) error {
	if errors.Is(err, os.ErrPermission) || errors.Is(err, unix.EROFS) {
		return fmt.Errorf("audit: trail %s is not writable by uid %d (set $%s): %w", path, os.Geteuid(), Env, err)
	}
	return fmt.Errorf("audit: trail %s: %w", path, err)
}

// Append writes one record: e with its time, pid, uid, host and boot ID
// filled in where unset, and attrs as its fields. The record is one write
// of one line, synced before Append returns, so the caller can act on the
// event knowing it is on record.
func (l *Log) Append(e Event, attrs ...slog.Attr) error {
	if e.Event == "" {
		return errors.New("audit: record without an event name")
	}
	l.fill(&e)
	line, err := Encode(e, attrs...)
	if err != nil {
		return err
	}
	f, err := openAppend(l.path)
	if err != nil {
		return err
	}
	n, err := f.Write(line)
	if err == nil && n != len(line) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(line))
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: %s %s to %s: %w", e.Event, e.VMID, l.path, err)
	}
	l.mirror(e, attrs)
	return nil
}

func (l *Log) fill(e *Event) {
	if e.Time.IsZero() {
		e.Time = l.clock.Now()
	}
	if e.Boottime == 0 {
		e.Boottime = int64(l.clock.Boottime())
	}
	if e.PID == 0 {
		e.PID = os.Getpid()
	}
	if e.UID == 0 {
		e.UID = os.Geteuid()
	}
	if e.Host == "" {
		e.Host, _ = os.Hostname()
	}
	if e.BootID == "" {
		e.BootID, _ = inventory.BootID()
	}
}

// Encode returns e as one JSON line (with its newline): the fixed keys,
// then attrs (groups as objects, times in RFC 3339, durations as Go
// duration strings).
func Encode(e Event, attrs ...slog.Attr) ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode %s: %w", e.Event, err)
	}
	extra := make(map[string]any, len(attrs)+len(e.Fields))
	for k, v := range e.Fields {
		extra[k] = v
	}
	for _, a := range attrs {
		if a.Equal(slog.Attr{}) {
			continue
		}
		k := a.Key
		if reserved[k] {
			k = "x_" + k
		}
		extra[k] = attrValue(a.Value)
	}
	if len(extra) > 0 {
		x, err := json.Marshal(extra)
		if err != nil {
			return nil, fmt.Errorf("audit: encode %s fields: %w", e.Event, err)
		}
		b = append(b[:len(b)-1], ',')
		b = append(b, x[1:]...)
	}
	b = append(b, '\n')
	if len(b) > MaxRecord {
		return nil, fmt.Errorf("audit: %s record is %d bytes, more than %d", e.Event, len(b), MaxRecord)
	}
	return b, nil
}

// attrValue turns a slog value into what encoding/json writes for it.
func attrValue(v slog.Value) any {
	v = v.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		m := map[string]any{}
		for _, a := range v.Group() {
			m[a.Key] = attrValue(a.Value)
		}
		return m
	case slog.KindTime:
		return v.Time().Format(time.RFC3339Nano)
	case slog.KindDuration:
		return v.Duration().String()
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return err.Error()
		}
		return v.Any()
	}
	return v.Any()
}

// Parse decodes one line of the trail; keys beyond Event's own go to
// Fields. Its errors say what is wrong with the line.
func Parse(line []byte) (Event, error) {
	var e Event
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return e, errors.New("audit: empty line")
	}
	if len(line) > MaxRecord {
		return e, fmt.Errorf("audit: line of %d bytes, more than %d", len(line), MaxRecord)
	}
	if err := json.Unmarshal(line, &e); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return e, fmt.Errorf("audit: not a JSON record (byte %d): %w", se.Offset, err)
		}
		return e, fmt.Errorf("audit: bad record: %w", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(line, &all); err != nil {
		return e, fmt.Errorf("audit: bad record: %w", err)
	}
	for k, v := range all {
		if !reserved[k] {
			if e.Fields == nil {
				e.Fields = map[string]json.RawMessage{}
			}
			e.Fields[k] = v
		}
	}
	if e.Event == "" {
		return e, errors.New("audit: record without an event name")
	}
	return e, nil
}

// ForRecord returns an event about the machine r describes: its ID, name
// and labels. The rest (time, pid, uid, host, boot ID) is filled by Append.
func ForRecord(r *inventory.Record, event string) Event {
	return Event{Event: event, VMID: r.ID, Name: r.Name, Labels: r.Labels}
}
