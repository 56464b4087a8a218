package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/inventory"
	"github.com/corral-vmm/corral/tests/guests"
)

// fakeInventory points the inventory and the audit trail at a new
// temporary directory and returns the state directory and the trail.
func fakeInventory(t *testing.T) (stateDir, trail string) {
	d := t.TempDir()
	t.Setenv(inventory.StateDirEnv, d)
	t.Setenv(audit.Env, filepath.Join(d, "audit.jsonl"))
	return d, filepath.Join(d, "audit.jsonl")
}

// fakeVM registers a VM of this process as a VMM would: running until
// its entry is closed; ended if end is set first.
func fakeVM(t *testing.T, sd, id, name string, labels map[string]string, state inventory.State) *inventory.Entry {
	t.Helper()
	start, err := inventory.ProcStart(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := inventory.BootID()
	clk := inventory.SystemClock{}
	e, err := inventory.Register(sd, inventory.Record{ID: id, Name: name, Labels: labels, PID: os.Getpid(), PIDStart: start,
		BootID: boot, UID: os.Geteuid(), Kernel: "/k", CPUs: 2, Memory: 128 << 20, Created: clk.Now(),
		Started: inventory.Duration(clk.Boottime() - fakeAge()), TTL: inventory.Duration(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	switch state {
	case inventory.Ended:
		e.Update(func(r *inventory.Record) {
			r.Ended = &inventory.End{Reason: "debug-exit", Code: 3, Boottime: inventory.Duration(clk.Boottime())}
		})
		e.Close()
	case inventory.Crashed:
		e.Close()
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// fakeAge is how long ago fakeVM's VMs started: 90 s, or less on a host
// that has not been up that long (a test VM of tests/tcgkvm), since a
// record cannot start before the boot.
func fakeAge() time.Duration {
	return min(90*time.Second, inventory.SystemClock{}.Boottime().Truncate(time.Second))
}

// trailEvents returns the events in the trail, in order, as "event id".
func trailEvents(t *testing.T, trail string) []string {
	t.Helper()
	b, err := os.ReadFile(trail)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		e, err := audit.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("trail line %q: %v", sc.Text(), err)
		}
		out = append(out, e.Event+" "+e.VMID)
	}
	return out
}

const (
	idWeb  = "aaaa000000000001"
	idDB   = "aaaa000000000002"
	idDead = "bbbb000000000003"
	idOld  = "cccc000000000004"
)

func fourVMs(t *testing.T) (string, string) {
	sd, trail := fakeInventory(t)
	fakeVM(t, sd, idWeb, "web", map[string]string{"app": "web", "tier": "front"}, inventory.Running)
	fakeVM(t, sd, idDB, "pg", map[string]string{"app": "pg"}, inventory.Running)
	fakeVM(t, sd, idDead, "dead", nil, inventory.Crashed)
	fakeVM(t, sd, idOld, "old", nil, inventory.Ended)
	return sd, trail
}

func psJSON(t *testing.T, args ...string) []vmJSON {
	t.Helper()
	code, out, stderr := runCLI(t, append([]string{"ps", "--json"}, args...)...)
	if code != exitOK {
		t.Fatalf("ps --json %q: status %d: %s", args, code, stderr)
	}
	var vms []vmJSON
	if err := json.Unmarshal([]byte(out), &vms); err != nil {
		t.Fatalf("ps --json: %v\n%s", err, out)
	}
	return vms
}

func TestPs(t *testing.T) {
	_, trail := fourVMs(t)
	code, out, stderr := runCLI(t, "ps")
	if code != exitOK || stderr != "" {
		t.Fatalf("ps: %d %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "TTL LEFT") {
		t.Fatalf("ps printed:\n%s", out)
	}
	// Ages come from the boot-time clock: allow a second's drift.
	age := fakeAge()
	left := time.Hour - age
	re := fmt.Sprintf(`\naaaa00000000  web   running +(%s|%s) +(%s|%s|%s) +2     128M    \d+ +\S+ +app=web,tier=front\n`,
		age, age+time.Second, left, left-time.Second, left-2*time.Second)
	if !regexp.MustCompile(re).MatchString(out) {
		t.Errorf("ps line of web is not as expected:\n%s", out)
	}
	if strings.Contains(out, "dead") || strings.Contains(out, "old") {
		t.Errorf("ps without -a shows ended or crashed VMs:\n%s", out)
	}
	all := psJSON(t, "-a")
	states := map[string]inventory.State{}
	for _, v := range all {
		states[v.Name] = v.State
	}
	if len(all) != 4 || states["web"] != inventory.Running || states["dead"] != inventory.Crashed || states["old"] != inventory.Ended {
		t.Errorf("ps -a: %v", states)
	}
	web := psJSON(t, "--filter", "label=app=web")
	if len(web) != 1 || web[0].ID != idWeb || web[0].Name != "web" || web[0].Labels["tier"] != "front" ||
		web[0].Record == nil || web[0].Record.CPUs != 2 || web[0].TTLLeft == nil || web[0].Age == nil || *web[0].Age < fakeAge().Seconds() {
		t.Errorf("--filter label=app=web: %+v", web)
	}
	if got := psJSON(t, "--filter", "label=app"); len(got) != 2 {
		t.Errorf("--filter label=app: %d VMs, want 2", len(got))
	}
	if got := psJSON(t, "-a", "--filter", "state=crashed"); len(got) != 1 || got[0].Name != "dead" {
		t.Errorf("--filter state=crashed: %+v", got)
	}
	if got := psJSON(t, "--filter", "label=app=pg", "--filter", "name=web"); len(got) != 0 {
		t.Errorf("two filters are not ANDed: %+v", got)
	}
	// ps found the crash: one vm.crashed, however often it looks.
	if ev := trailEvents(t, trail); len(ev) != 1 || ev[0] != "vm.crashed "+idDead {
		t.Errorf("trail after several ps: %q, want one vm.crashed", ev)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"ps", "--filter", "color=red"}, `unknown key "color"`},
		{[]string{"ps", "--filter", "label"}, "want label=KEY[=VALUE]"},
		{[]string{"ps", "extra"}, `unexpected argument "extra"`},
		{[]string{"inspect"}, "want one ID"},
		{[]string{"logs", "a", "b"}, "want one ID"},
		{[]string{"events", "--since", "-1m"}, "must not be negative"},
		{[]string{"gc", "x"}, `unexpected argument "x"`},
		{[]string{"run", "--kernel", "/x", "--label", "novalue"}, `label "novalue": want KEY=VALUE`},
	} {
		code, _, stderr := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("corral %q: status %d, stderr %q; want %d with %q", c.args, code, stderr, exitUsage, c.want)
		}
	}
}

func TestInspect(t *testing.T) {
	sd, _ := fourVMs(t)
	for q, want := range map[string]string{"web": idWeb, idDB: idDB, "bbb": idDead, "old": idOld} {
		code, out, stderr := runCLI(t, "inspect", q)
		var v vmJSON
		if code != exitOK || json.Unmarshal([]byte(out), &v) != nil || v.ID != want || v.Dir != filepath.Join(inventory.VMsDir(sd), want) {
			t.Errorf("inspect %s: status %d, %s %s; want %s", q, code, out, stderr, want)
		}
	}
	code, _, stderr := runCLI(t, "inspect", "aaaa")
	if code != exitFailure || !strings.Contains(stderr, `ID prefix "aaaa" matches 2 VMs: aaaa000000000001 (web), aaaa000000000002 (pg); give more of the ID`) {
		t.Errorf("ambiguous prefix: status %d, %q", code, stderr)
	}
	code, _, stderr = runCLI(t, "inspect", "nope")
	if code != exitFailure || !strings.Contains(stderr, `nothing has the ID or name "nope"`) {
		t.Errorf("unknown VM: status %d, %q", code, stderr)
	}
	// A corrupt record: listed with a warning, inspect says what is wrong.
	os.WriteFile(filepath.Join(inventory.VMsDir(sd), idOld, inventory.RecordFile), []byte(`{"version":1,`), 0o600)
	code, _, stderr = runCLI(t, "inspect", idOld)
	if code != exitFailure || !strings.Contains(stderr, idOld+"/record.json: corrupt record: truncated JSON") {
		t.Errorf("corrupt record: status %d, %q", code, stderr)
	}
}

func TestGC(t *testing.T) {
	sd, trail := fourVMs(t)
	code, out, stderr := runCLI(t, "gc")
	if code != exitOK {
		t.Fatalf("gc: %d %s", code, stderr)
	}
	if !strings.Contains(out, "collected "+idDead+" dead (crashed)") || !strings.Contains(out, "collected "+idOld+" old (ended)") || strings.Count(out, "\n") != 2 {
		t.Errorf("gc printed:\n%s", out)
	}
	left, _ := os.ReadDir(inventory.VMsDir(sd))
	if len(left) != 2 {
		t.Errorf("%d directories left, want the 2 running", len(left))
	}
	ev := trailEvents(t, trail)
	want := []string{"vm.crashed " + idDead, "vm.collected " + idOld, "vm.collected " + idDead}
	if len(ev) != 3 || ev[0] != want[0] || !(ev[1] == want[1] && ev[2] == want[2] || ev[1] == want[2] && ev[2] == want[1]) {
		t.Errorf("trail %q, want vm.crashed then a vm.collected for each", ev)
	}
	if code, out, _ := runCLI(t, "gc"); code != exitOK || out != "" {
		t.Errorf("second gc: %d %q", code, out)
	}
	// gc refuses to remove anything it cannot audit.
	t.Setenv(audit.Env, filepath.Join(trail, "not-a-dir", "audit.jsonl"))
	if code, _, stderr := runCLI(t, "gc"); code != exitFailure || !strings.Contains(stderr, "audit") {
		t.Errorf("gc with a bad trail: %d %q", code, stderr)
	}
}

func TestEventsSince(t *testing.T) {
	_, trail := fakeInventory(t)
	l, err := audit.Open(trail, audit.Options{NoJournal: true})
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := inventory.BootID()
	now := inventory.SystemClock{}.Boottime()
	// Ages scale down on a host up for less than 2 h (a tests/tcgkvm VM is
	// seconds old): a record cannot be older than the boot, and since
	// must fall between recent and old (a boot time of 0 would be filled
	// in with now by the trail).
	oldAge, recentAge, since := min(2*time.Hour, now-time.Millisecond), min(time.Minute, now/4), min(10*time.Minute, now/2)
	for _, e := range []audit.Event{
		{Event: "vm.old", VMID: "0000000000000001", BootID: boot, Boottime: int64(now - oldAge)},
		{Event: "vm.recent", VMID: "0000000000000002", BootID: boot, Boottime: int64(now - recentAge), Name: "r"},
		{Event: "vm.lastboot", VMID: "0000000000000003", BootID: "another-boot", Boottime: int64(time.Second)},
	} {
		// The calendar says the old one is newest: it must not matter.
		e.Time = time.Date(2106, 2, 7, 6, 28, 17, 0, time.UTC)
		if err := l.Append(e); err != nil {
			t.Fatal(err)
		}
	}
	count := func(args ...string) string {
		code, out, stderr := runCLI(t, append([]string{"events"}, args...)...)
		if code != exitOK {
			t.Fatalf("events %q: %d %s", args, code, stderr)
		}
		var ev []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 1 {
				ev = append(ev, f[1])
			}
		}
		return strings.Join(ev, ",")
	}
	if got := count(); got != "vm.old,vm.recent,vm.lastboot" {
		t.Errorf("events: %s", got)
	}
	if got := count("--since", since.String()); got != "vm.recent" {
		t.Errorf("events --since %s: %s, want vm.recent", since, got)
	}
	if got := count("--since", "3h"); got != "vm.old,vm.recent" && now > 3*time.Hour {
		t.Errorf("events --since 3h: %s", got)
	}
	if got := count("--since", (now + time.Hour).String()); got != "vm.old,vm.recent,vm.lastboot" {
		t.Errorf("events --since beyond this boot: %s", got)
	}
	_, out, _ := runCLI(t, "events", "--json", "--since", since.String())
	if e, err := audit.Parse([]byte(out)); err != nil || e.Event != "vm.recent" || strings.Count(out, "\n") != 1 {
		t.Errorf("events --json: %q %v", out, err)
	}
}

func TestLogs(t *testing.T) {
	sd, _ := fakeInventory(t)
	e := fakeVM(t, sd, idWeb, "web", nil, inventory.Ended)
	os.WriteFile(filepath.Join(e.Dir(), inventory.ConsoleLogFile+".1"), []byte("first\n"), 0o600)
	os.WriteFile(filepath.Join(e.Dir(), inventory.ConsoleLogFile), []byte("second\n"), 0o600)
	for _, args := range [][]string{{"logs", "web"}, {"logs", "-f", "aaaa"}} {
		code, out, stderr := runCLI(t, args...)
		if code != exitOK || out != "first\nsecond\n" {
			t.Errorf("%q: status %d, %q %q", args, code, out, stderr)
		}
	}
	// -f follows a running VM until it ends.
	run := fakeVM(t, sd, idDB, "pg", nil, inventory.Running)
	log := filepath.Join(run.Dir(), inventory.ConsoleLogFile)
	os.WriteFile(log, []byte("boot\n"), 0o600)
	var outb, errb bytes.Buffer
	done := make(chan int)
	go func() { done <- run2(context.Background(), []string{"logs", "-f", "pg"}, &outb, &errb) }()
	time.Sleep(3 * followPoll)
	f, _ := os.OpenFile(log, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("more\n")
	f.Close()
	run.Close()
	select {
	case code := <-done:
		if code != exitOK || outb.String() != "boot\nmore\n" {
			t.Errorf("logs -f: %d %q %q", code, outb.String(), errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("logs -f did not end with the VM")
	}
}

// run2 is run with its own context and writers (the buffers are read only
// after it returns).
func run2(ctx context.Context, args []string, stdout, stderr *bytes.Buffer) int {
	return run(ctx, args, strings.NewReader(""), stdout, stderr)
}

// TestHelpListsCommands: --help names every command and the flags of the
// inventory commands.
func TestHelpListsCommands(t *testing.T) {
	_, out, _ := runCLI(t, "--help")
	for _, w := range []string{"corral run ", "corral ps ", "corral inspect ", "corral logs ", "corral events ", "corral gc ", "corral dhcp ",
		"corral version", "corral help", "--filter F", "--since D", "--json", "-a ", "-f ", "--name NAME", "--label KEY=VALUE", "CORRAL_AUDIT_LOG", "CORRAL_STATE_DIR"} {
		if !strings.Contains(out, w) {
			t.Errorf("help lacks %q", w)
		}
	}
}

// TestRunRegisters boots test guests through the CLI with --name and
// --label: a running one is in ps --json with them and its console log;
// one that exits is ended with its code, and the trail holds created,
// started, ended in order.
func TestRunRegisters(t *testing.T) {
	testenv.MustHaveKVM(t)
	_, trail := fakeInventory(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var outb, errb bytes.Buffer
	go func() {
		done <- run2(ctx, []string{"run", "--kernel", guests.BuildT(t, "spin"), "--memory", "64M", "--name", "spinner", "--label", "a=b"}, &outb, &errb)
	}()
	var v vmJSON
	deadline := time.Now().Add(30 * time.Second)
	for {
		if vms := psJSON(t, "--filter", "name=spinner"); len(vms) == 1 {
			v = vms[0]
			if _, logs, _ := runCLI(t, "logs", "spinner"); strings.Contains(logs, "corral-guest: spinning") {
				break
			}
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("spinner not in ps with its console log; stderr: %s", errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v.State != inventory.Running || v.Labels["a"] != "b" || v.Record.PID != os.Getpid() || v.Record.KernelSHA256 == "" {
		t.Errorf("ps --json: %+v", v)
	}
	cancel()
	<-done
	code, _, stderr := runCLI(t, "run", "--kernel", guests.BuildT(t, "hello"), "--cmdline", "exit=42", "--memory", "64M", "--name", "hello")
	if code != 42 {
		t.Fatalf("hello: status %d: %s", code, stderr)
	}
	ended := psJSON(t, "-a", "--filter", "name=hello")
	if len(ended) != 1 || ended[0].State != inventory.Ended || ended[0].Record.Ended == nil || ended[0].Record.Ended.Code != 42 {
		t.Errorf("hello after it ended: %+v", ended)
	}
	if spin := psJSON(t, "-a", "--filter", "name=spinner"); len(spin) != 1 || spin[0].State != inventory.Ended {
		t.Errorf("spinner after it was stopped: %+v", spin)
	}
	var got []string
	for _, e := range trailEvents(t, trail) {
		if strings.HasSuffix(e, v.ID) {
			got = append(got, strings.Fields(e)[0])
		}
	}
	if strings.Join(got, ",") != "vm.created,vm.started,vm.ended" {
		t.Errorf("spinner's trail: %q", got)
	}
}
