package inventory

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// RecordVersion is the version of the record format this package writes.
// A newer record is refused, not misread.
const RecordVersion = 1

// ErrCorrupt is wrapped by ParseRecord's errors.
var ErrCorrupt = errors.New("corrupt record")

// Record describes one machine: what started it, what it runs, and how it
// ended. It is record.json in the VM's directory.
type Record struct {
	Version int               `json:"version"`
	ID      string            `json:"id"`
	Name    string            `json:"name,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`

	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"` // /proc/PID/stat starttime: clock ticks after boot
	BootID   string `json:"boot_id"`
	UID      int    `json:"uid"`
	Host     string `json:"host,omitempty"`

	Kernel       string `json:"kernel"`
	KernelSHA256 string `json:"kernel_sha256,omitempty"`
	// Snapshot is the snapshot directory a restored machine was built
	// from; empty for a machine that booted.
	Snapshot string `json:"snapshot,omitempty"`
	Initrd   string `json:"initrd,omitempty"`
	Cmdline  string `json:"cmdline,omitempty"`
	CPUs     int    `json:"cpus"`
	Memory   uint64 `json:"memory"`
	Disks    []Disk `json:"disks,omitempty"`
	NICs     []NIC  `json:"nics,omitempty"`

	// Created is the wall-clock start, for people; Started (CLOCK_BOOTTIME)
	// is what ages and TTLs are computed from.
	Created time.Time `json:"created"`
	Started Duration  `json:"started_boottime"`
	// TTL is how long the machine may run; 0 for no limit.
	TTL Duration `json:"ttl,omitempty"`

	// Ended says how the machine ended; nil while it runs or if the VMM
	// died first.
	Ended *End `json:"ended,omitempty"`
}

// Disk is one disk of a machine.
type Disk struct {
	Path     string `json:"path"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// NIC is one network interface of a machine.
type NIC struct {
	Tap   string `json:"tap,omitempty"`
	MAC   string `json:"mac,omitempty"`
	Host  string `json:"host,omitempty"`  // the host side's prefix, the guest's router
	Guest string `json:"guest,omitempty"` // the address leased to the guest
}

// End is how a machine ended.
type End struct {
	Reason   string    `json:"reason"`
	Code     int       `json:"code"`
	Detail   string    `json:"detail,omitempty"`
	Time     time.Time `json:"time"`     // wall clock, shown only
	Boottime Duration  `json:"boottime"` // CLOCK_BOOTTIME when it ended
}

// Duration is a time.Duration written in JSON as Go's duration string
// ("1m30s"), which people can read in a record.
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: want a string like \"1m30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// maxRecordSize bounds what ParseRecord reads: a record is a few KiB.
const maxRecordSize = 1 << 20

// IDLen is the length of a machine ID in hex digits.
const IDLen = 16

// NewID returns a new random machine ID: 16 lowercase hex digits.
func NewID() (string, error) {
	var b [IDLen / 2]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("inventory: machine ID: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ValidID reports whether id has the form NewID gives.
func ValidID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// MaxNameLen bounds a machine name's length in bytes.
const MaxNameLen = 128

// ValidateName checks a machine name: 1 to MaxNameLen bytes of printable
// UTF-8 without spaces (a test's name, "ci-42/web"). A name that is also
// an ID prefix of another VM makes Resolve report both.
func ValidateName(n string) error {
	if n == "" {
		return nil
	}
	if len(n) > MaxNameLen {
		return fmt.Errorf("name %q is longer than %d bytes", n, MaxNameLen)
	}
	if !utf8.ValidString(n) {
		return fmt.Errorf("name %q is not UTF-8", n)
	}
	for i, r := range n {
		if r <= ' ' || r == 0x7f || !unicode.IsPrint(r) {
			return fmt.Errorf("name %q has %q at offset %d (want printable characters, no spaces)", n, r, i)
		}
	}
	return nil
}

// ValidateLabel checks one label: a key of 1..128 bytes of letters, digits
// and . _ - / (as Docker's), a value of at most 1024 bytes of UTF-8
// without control characters.
func ValidateLabel(k, v string) error {
	if k == "" || len(k) > 128 {
		return fmt.Errorf("label key %q: want 1 to 128 bytes", k)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
			return fmt.Errorf("label key %q has %q at offset %d (want letters, digits, . _ - /)", k, c, i)
		}
	}
	if len(v) > 1024 {
		return fmt.Errorf("label %s: value is %d bytes, more than 1024", k, len(v))
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("label %s: value is not UTF-8", k)
	}
	for i, r := range v {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("label %s: value has control character %q at offset %d", k, r, i)
		}
	}
	return nil
}

// ParseLabel splits "K=V" and validates it.
func ParseLabel(s string) (k, v string, err error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", fmt.Errorf("label %q: want KEY=VALUE", s)
	}
	if err := ValidateLabel(k, v); err != nil {
		return "", "", err
	}
	return k, v, nil
}

// Marshal encodes r as indented JSON with a final newline.
func (r *Record) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("inventory: record %s: %w", r.ID, err)
	}
	return append(b, '\n'), nil
}

// ParseRecord decodes and checks a record. Its errors wrap ErrCorrupt and
// say where the input is bad: a JSON syntax error with its byte offset, a
// field of the wrong type with its name, a missing or malformed field.
func ParseRecord(b []byte) (*Record, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	if len(b) > maxRecordSize {
		return nil, bad("%d bytes, more than %d", len(b), maxRecordSize)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, bad("empty")
	}
	var r Record
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return nil, bad("invalid JSON at byte %d: %v", se.Offset, err)
		case errors.As(err, &te):
			return nil, bad("field %q: %v", te.Field, err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, bad("truncated JSON")
		}
		return nil, bad("%v", err)
	}
	if dec.More() {
		return nil, bad("data after the record at byte %d", dec.InputOffset())
	}
	switch {
	case r.Version == 0:
		return nil, bad("no version")
	case r.Version > RecordVersion:
		return nil, bad("version %d is newer than this corral understands (%d)", r.Version, RecordVersion)
	case r.Version < 0:
		return nil, bad("version %d", r.Version)
	case !ValidID(r.ID):
		return nil, bad("id %q is not %d hex digits", r.ID, IDLen)
	case r.PID <= 0:
		return nil, bad("pid %d", r.PID)
	case r.UID < 0:
		return nil, bad("uid %d", r.UID)
	case r.CPUs < 0:
		return nil, bad("cpus %d", r.CPUs)
	case r.Started < 0 || r.TTL < 0:
		return nil, bad("negative started_boottime or ttl")
	}
	if err := ValidateName(r.Name); err != nil {
		return nil, bad("%v", err)
	}
	for k, v := range r.Labels {
		if err := ValidateLabel(k, v); err != nil {
			return nil, bad("%v", err)
		}
	}
	return &r, nil
}
