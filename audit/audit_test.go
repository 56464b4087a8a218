package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const childEnv = "AUDIT_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// records is how many records each concurrent writer appends.
const records = 40

// child: "write" appends records of varied sizes (some beyond PIPE_BUF)
// to the trail at arg; "open" tries to open it.
func child(mode, arg string) int {
	l, err := Open(arg, Options{NoJournal: true})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if mode == "write" {
		w := os.Getpid()
		for i := range records {
			pad := strings.Repeat(strconv.Itoa(i%10), (w*7+i*131)%9000)
			if err := l.Append(Event{Event: "vm.test", VMID: "0123456789abcdef"}, slog.Int("writer", w), slog.Int("seq", i), slog.String("pad", pad)); err != nil {
				fmt.Println("error:", err)
				return 1
			}
		}
	}
	fmt.Println("ok")
	return 0
}

type fakeClock struct {
	now  time.Time
	boot time.Duration
}

func (c fakeClock) Now() time.Time          { return c.now }
func (c fakeClock) Boottime() time.Duration { return c.boot }

func TestAppendAndParse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "audit.jsonl")
	clk := fakeClock{now: time.Date(2106, 2, 7, 6, 28, 17, 0, time.UTC), boot: 42 * time.Second}
	l, err := Open(p, Options{Clock: clk, NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	e := Event{Event: "vm.ended", VMID: "0123456789abcdef", Name: "ci", Labels: map[string]string{"job": "1"}}
	if err := l.Append(e, slog.Group("exit", slog.String("reason", "debug-exit"), slog.Int("code", 7)),
		slog.Duration("duration", 1500*time.Millisecond), slog.String("pid", "shadow"), slog.String("tap", "corral0")); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(b, []byte("\n")) != 1 {
		t.Fatalf("want one line:\n%s", b)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Event != "vm.ended" || got.VMID != e.VMID || got.Name != "ci" || got.Labels["job"] != "1" ||
		!got.Time.Equal(clk.now) || got.Boottime != int64(42*time.Second) || got.PID != os.Getpid() || got.UID != os.Geteuid() || got.BootID == "" || got.Host == "" {
		t.Errorf("parsed %+v", got)
	}
	for k, want := range map[string]string{"exit": `{"code":7,"reason":"debug-exit"}`, "duration": `"1.5s"`, "x_pid": `"shadow"`, "tap": `"corral0"`} {
		if string(got.Fields[k]) != want {
			t.Errorf("field %s = %s, want %s", k, got.Fields[k], want)
		}
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("trail mode %v, want 0600", st.Mode().Perm())
	}
	for _, bad := range []string{"", "{", `{"time":"2026-01-01T00:00:00Z"}`, `{"event":5}`, "[1]"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if err := l.Append(Event{}); err == nil {
		t.Error("record without an event accepted")
	}
}

// TestConcurrentWriters: 20 processes appending at once leave only whole,
// parseable lines, every record once.
func TestConcurrentWriters(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.jsonl")
	const writers = 20
	var wg sync.WaitGroup
	errs := make(chan string, writers)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(os.Args[0], "-test.run=^$", p)
			cmd.Env = append(os.Environ(), childEnv+"=write")
			out, err := cmd.Output()
			if err != nil || string(out) != "ok\n" {
				errs <- fmt.Sprintf("writer: %v %s", err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, MaxRecord)
	seen := map[string]bool{}
	lines := 0
	for sc.Scan() {
		lines++
		e, err := Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("line %d: %v", lines, err)
		}
		var w, seq int
		json.Unmarshal(e.Fields["writer"], &w)
		json.Unmarshal(e.Fields["seq"], &seq)
		k := fmt.Sprint(w, "/", seq)
		if seen[k] {
			t.Errorf("record %s twice", k)
		}
		seen[k] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines != writers*records || len(seen) != writers*records {
		t.Errorf("%d lines, %d distinct records; want %d", lines, len(seen), writers*records)
	}
}

// TestNotWritable: a trail the user cannot write is refused at Open with
// the way out.
func TestNotWritable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another uid")
	}
	d := t.TempDir()
	for p := d; p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	bin := filepath.Join(d, "audit.test")
	b, _ := os.ReadFile(os.Args[0])
	os.WriteFile(bin, b, 0o755)
	p := filepath.Join(d, "audit.jsonl")
	os.WriteFile(p, nil, 0o644)
	cmd := exec.Command(bin, "-test.run=^$", p)
	cmd.Env = append(os.Environ(), childEnv+"=open")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, _ := cmd.Output()
	want := fmt.Sprintf("error: audit: trail %s is not writable by uid 65534 (set $CORRAL_AUDIT_LOG)", p)
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("got %q\nwant %q...", out, want)
	}
}

func TestDefaultPath(t *testing.T) {
	t.Setenv(Env, "/x/a.jsonl")
	if p := DefaultPath("/s"); p != "/x/a.jsonl" {
		t.Errorf("with $%s: %s", Env, p)
	}
	t.Setenv(Env, "")
	want := "/s/audit.jsonl"
	if os.Geteuid() == 0 {
		want = RootPath
	}
	if p := DefaultPath("/s"); p != want {
		t.Errorf("DefaultPath = %s, want %s", p, want)
	}
}

// TestJournalFields: every field sent to the journal has a name journald
// accepts, and the VM's ID is CORRAL_VM_ID.
func TestJournalFields(t *testing.T) {
	e := Event{Event: "vm.ended", VMID: "0123456789abcdef", Name: "x", Labels: map[string]string{"ci.job": "4", "team/a-b": "c"},
		Fields: map[string]json.RawMessage{"tap": []byte(`"corral0"`)}}
	attrs := journalAttrs(e, []slog.Attr{slog.Group("exit", slog.Int("code", 7)), slog.String("leased-address", "10.0.0.2")})
	got := map[string]string{}
	for _, a := range attrs {
		for i, c := range a.Key {
			if !(c >= 'A' && c <= 'Z' || c == '_' || i > 0 && c >= '0' && c <= '9') {
				t.Errorf("journal field %q is not [A-Z_][A-Z0-9_]*", a.Key)
			}
		}
		got[a.Key] = a.Value.String()
	}
	for k, v := range map[string]string{"CORRAL_VM_ID": e.VMID, "CORRAL_EVENT": "vm.ended", "CORRAL_LABEL_CI_JOB": "4",
		"CORRAL_LABEL_TEAM_A_B": "c", "CORRAL_TAP": "corral0", "CORRAL_LEASED_ADDRESS": "10.0.0.2", "MESSAGE_ID": messageID("vm.ended")} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(messageID("x")) != 32 || messageID("vm.ended") == messageID("vm.started") {
		t.Error("MESSAGE_IDs not 128-bit and distinct per event")
	}
}

func FuzzParse(f *testing.F) {
	line, _ := Encode(Event{Event: "vm.started", VMID: "0123456789abcdef", Time: time.Unix(0, 0).UTC()}, slog.Int("code", 1))
	f.Add(line)
	f.Add([]byte(`{"event":"x","labels":{"a":"b"},"boottime_ns":-1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		e, err := Parse(in)
		if err != nil {
			return
		}
		// What parses encodes to a line that parses to the same event.
		b, err := Encode(e)
		if err != nil {
			return // too large once re-encoded, or a time JSON cannot hold
		}
		e2, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if e2.Event != e.Event || e2.VMID != e.VMID || len(e2.Fields) != len(e.Fields) {
			t.Fatalf("round trip changed %+v to %+v", e, e2)
		}
	})
}
