package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"strconv"
	"strings"

	slogjournal "github.com/systemd/slog-journal"
)

// journalSocket is where journald listens (slog-journal's fixed address).
const journalSocket = "/run/systemd/journal/socket"

// newJournal returns a handler that mirrors records to the journal, or nil
// when journald does not run here.
func newJournal() slog.Handler {
	if _, err := os.Stat(journalSocket); err != nil {
		return nil
	}
	h, err := slogjournal.NewHandler(&slogjournal.Options{
		ReplaceAttr:  func(_ []string, a slog.Attr) slog.Attr { a.Key = journalKey(a.Key); return a },
		ReplaceGroup: journalKey,
	})
	if err != nil {
		return nil
	}
	return h
}

// mirror sends e to the journal; the trail is the record, so a journal
// failure is not the caller's (journald may be restarting).
func (l *Log) mirror(e Event, attrs []slog.Attr) {
	if l.journal == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r := slog.NewRecord(e.Time, slog.LevelInfo, "corral "+e.Event+" "+e.VMID, 0)
	r.AddAttrs(journalAttrs(e, attrs)...)
	_ = l.journal.Handle(context.Background(), r)
}

// journalAttrs are e's journal fields: CORRAL_EVENT, CORRAL_VM_ID, ...,
// a MESSAGE_ID fixed per event name, each label as CORRAL_LABEL_<KEY>,
// and attrs as CORRAL_<KEY> (groups joined with _).
func journalAttrs(e Event, attrs []slog.Attr) []slog.Attr {
	out := []slog.Attr{
		slog.String("MESSAGE_ID", messageID(e.Event)),
		slog.String("CORRAL_EVENT", e.Event),
		slog.String("CORRAL_VM_ID", e.VMID),
		slog.String("CORRAL_UID", strconv.Itoa(e.UID)),
		slog.String("CORRAL_PID", strconv.Itoa(e.PID)),
		slog.String("CORRAL_BOOT_ID", e.BootID),
	}
	if e.Name != "" {
		out = append(out, slog.String("CORRAL_NAME", e.Name))
	}
	for k, v := range e.Labels {
		out = append(out, slog.String("CORRAL_LABEL_"+journalKey(k), v))
	}
	for k, v := range e.Fields {
		out = append(out, slog.String("CORRAL_"+journalKey(k), rawString(v)))
	}
	for _, a := range attrs {
		out = append(out, slog.Attr{Key: "CORRAL_" + journalKey(a.Key), Value: a.Value})
	}
	return out
}

// rawString unquotes a JSON string and leaves other JSON as it is.
func rawString(v json.RawMessage) string {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	return string(v)
}

// journalKey makes k a journal field name: [A-Z0-9_], upper case.
func journalKey(k string) string {
	var b strings.Builder
	for _, c := range k {
		switch {
		case c >= 'a' && c <= 'z':
			b.WriteRune(c - 'a' + 'A')
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// messageID is the 128-bit journal MESSAGE_ID of an event, derived from
// its name so it is the same on every host and release.
func messageID(event string) string {
	s := sha256.Sum256([]byte("corral audit " + event))
	return hex.EncodeToString(s[:16])
}
