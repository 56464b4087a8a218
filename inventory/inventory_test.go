package inventory

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv selects a child mode when the test binary runs itself.
const childEnv = "INVENTORY_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode, os.Args[len(os.Args)-1]))
	}
	os.Exit(m.Run())
}

// child runs in a re-executed test binary: "hold" registers a VM in the
// state directory arg, says "ready" and waits to be killed; "end"
// registers, records an end and exits; "list" prints the IDs it lists;
// "register" registers and prints the error, if any.
func child(mode, arg string) int {
	switch mode {
	case "hold", "end", "register":
		e, err := Register(arg, testRecord(newIDOrDie(), "child-"+mode))
		if mode == "register" {
			if err != nil {
				fmt.Println("error:", err)
				return 1
			}
			fmt.Println("ok", e.Record().ID)
			return 0
		}
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if mode == "end" {
			if err := e.Update(func(r *Record) { r.Ended = &End{Reason: "power-off"} }); err != nil {
				fmt.Println("error:", err)
				return 1
			}
			e.Close()
			fmt.Println("ended")
			return 0
		}
		fmt.Println("ready")
		sleepForever()
	case "list":
		vms, err := List(arg)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		for _, v := range vms {
			fmt.Println(v.Name(), v.State)
		}
		return 0
	case "statedir":
		fmt.Println(StateDir())
		return 0
	}
	return 2
}

func newIDOrDie() string {
	id, err := NewID()
	if err != nil {
		panic(err)
	}
	return id
}

// testRecord is a record of this process, as a VMM would write it.
func testRecord(id, name string) Record {
	start, err := ProcStart(os.Getpid())
	if err != nil {
		panic(err)
	}
	boot, err := BootID()
	if err != nil {
		panic(err)
	}
	return Record{ID: id, Name: name, Labels: map[string]string{"test": "inventory"}, PID: os.Getpid(), PIDStart: start,
		BootID: boot, UID: os.Geteuid(), Kernel: "/k", CPUs: 1, Memory: 64 << 20,
		Created: time.Now(), Started: Duration(SystemClock{}.Boottime())}
}

// startChild runs this test binary in mode with arg; with wait it returns
// once the child has said its first line.
func startChild(t *testing.T, mode, arg string, cred *syscall.Credential) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(testBinary(t, cred), "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stderr = os.Stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child %s: %v", mode, err)
	}
	return cmd, strings.TrimSpace(line)
}

// runChild runs the child to its end and returns its output.
func runChild(t *testing.T, mode, arg string, cred *syscall.Credential) string {
	t.Helper()
	cmd := exec.Command(testBinary(t, cred), "-test.run=^$", arg)
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, _ := cmd.Output()
	return string(out)
}

// testBinary returns this test binary, copied where another uid can run
// it when cred is set (go test builds it in a private directory).
func testBinary(t *testing.T, cred *syscall.Credential) string {
	t.Helper()
	if cred == nil {
		return os.Args[0]
	}
	d := openDir(t)
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(d, "inventory.test")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// openDir is a new temporary directory that every user can read.
func openDir(t *testing.T) string {
	d := t.TempDir()
	for p := d; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func mustRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a child as another uid")
	}
}

// nobody is the uid/gid the tests switch to.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// sharedDir is a state directory every user can use (as a
// $CORRAL_STATE_DIR shared by the users of a CI machine would be).
func sharedDir(t *testing.T) string {
	d := openDir(t)
	if err := os.Mkdir(VMsDir(d), 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(VMsDir(d), 0o1777); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRecordRoundTrip(t *testing.T) {
	r := Record{Version: RecordVersion, ID: "0123456789abcdef", Name: "ci-42/web", Labels: map[string]string{"ci.job": "42", "team": "a b"},
		PID: 4242, PIDStart: 123456, BootID: "b0", UID: 1000, Host: "h1",
		Kernel: "/k/vmlinux", KernelSHA256: strings.Repeat("ab", 32), Initrd: "/k/initrd", Cmdline: "console=ttyS0",
		CPUs: 2, Memory: 256 << 20, Disks: []Disk{{Path: "/d.img", ReadOnly: true}},
		NICs:    []NIC{{Tap: "corral0", MAC: "52:54:00:12:34:56", Host: "10.200.0.1/24", Guest: "10.200.0.2"}},
		Created: time.Date(2106, 2, 7, 6, 28, 16, 5, time.UTC), Started: Duration(90 * time.Second), TTL: Duration(time.Hour),
		Ended: &End{Reason: "debug-exit", Code: 7, Detail: "x", Time: time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC), Boottime: Duration(100 * time.Second)}}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", *got, r)
	}
	if !strings.Contains(string(b), `"ttl": "1h0m0s"`) {
		t.Errorf("TTL not written as a duration string:\n%s", b)
	}
}

func TestParseRecordErrors(t *testing.T) {
	good := `{"version":1,"id":"0123456789abcdef","pid":5,"pid_start":1,"boot_id":"b","uid":0,"kernel":"/k","cpus":1,"memory":1,"created":"2026-01-01T00:00:00Z","started_boottime":"1s"}`
	if _, err := ParseRecord([]byte(good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for _, c := range []struct{ in, want string }{
		{``, "corrupt record: empty"},
		{`{"version":1,"id":`, "corrupt record: truncated JSON"},
		{`{"version":1,}`, "corrupt record: invalid JSON at byte 14"},
		{`{"version":"one"}`, `corrupt record: field "version"`},
		{strings.Replace(good, `"version":1`, `"version":9`, 1), "version 9 is newer than this corral understands (1)"},
		{strings.Replace(good, `"version":1,`, ``, 1), "corrupt record: no version"},
		{strings.Replace(good, `0123456789abcdef`, `../../etc`, 1), `id "../../etc" is not 16 hex digits`},
		{strings.Replace(good, `"pid":5`, `"pid":0`, 1), "corrupt record: pid 0"},
		{strings.Replace(good, `"1s"`, `"soon"`, 1), `time: invalid duration "soon"`},
		{strings.Replace(good, `"cpus":1`, `"cpus":1,"bogus":2`, 1), `unknown field "bogus"`},
		{good + `{}`, "data after the record"},
		{strings.Replace(good, `"pid":5`, `"pid":5,"name":"a b"`, 1), `name "a b" has ' ' at offset 1`},
		{strings.Replace(good, `"pid":5`, `"pid":5,"labels":{"k=":"v"}`, 1), `label key "k=" has '='`},
	} {
		_, err := ParseRecord([]byte(c.in))
		if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseRecord(%.60q) = %v; want ErrCorrupt mentioning %q", c.in, err, c.want)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	r := testRecordStatic()
	b, _ := r.Marshal()
	f.Add(b)
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := ParseRecord(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error not a one-line ErrCorrupt: %v", err)
			}
			return
		}
		// What parses writes back to the same record.
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		r2, err := ParseRecord(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		b2, _ := r2.Marshal()
		if string(b) != string(b2) {
			t.Fatalf("not stable:\n%s\n%s", b, b2)
		}
	})
}

func testRecordStatic() Record {
	return Record{Version: 1, ID: "00000000000000aa", Name: "n", PID: 1, BootID: "b", Kernel: "/k", CPUs: 1, Memory: 1,
		Created: time.Unix(0, 0).UTC(), Started: 1}
}

func TestParseStatStart(t *testing.T) {
	rest := " S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21\n"
	for _, name := range []string{"(corral)", "(a b) c)", "()", "((x) ) S 9 9)"} {
		got, err := parseStatStart([]byte("123 " + name + rest))
		if err != nil || got != 987654 {
			t.Errorf("comm %s: %d, %v; want 987654", name, got, err)
		}
	}
	for _, bad := range []string{"123 corral S 1", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 x 20"} {
		if _, err := parseStatStart([]byte(bad)); err == nil {
			t.Errorf("parseStatStart(%q) accepted", bad)
		}
	}
	if _, err := ProcStart(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

// TestPIDReuseGuard: a record names a live process only if its boot ID
// and start time match; a later process with the same pid is not it.
func TestPIDReuseGuard(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st, err := ProcStart(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := BootID()
	r := &Record{PID: cmd.Process.Pid, PIDStart: st, BootID: boot}
	if !Alive(r) {
		t.Fatal("live child not alive")
	}
	reused := *r
	reused.PIDStart = st + 1 // the pid now belongs to a process that started later
	if Alive(&reused) {
		t.Error("a process with another start time taken for the VMM")
	}
	otherBoot := *r
	otherBoot.BootID = "another-boot"
	if Alive(&otherBoot) {
		t.Error("a record of another boot taken for a live VMM")
	}
	// Faked /proc: the same pid and start time in another boot are not it.
	fake := func(int) (uint64, error) { return st, nil }
	if alive(r, "new-boot", fake) || !alive(r, boot, fake) {
		t.Error("alive does not compare boot IDs")
	}
	cmd.Process.Kill()
	cmd.Wait()
	if Alive(r) {
		t.Error("dead child alive")
	}
}

// TestCrashedVMM: a VMM (a child holding the lock) killed with SIGKILL
// shows as crashed; one that recorded its end shows as ended; the crash is
// claimed for reporting once.
func TestCrashedVMM(t *testing.T) {
	sd := t.TempDir()
	cmd, line := startChild(t, "hold", sd, nil)
	if line != "ready" {
		t.Fatalf("child: %s", line)
	}
	states := func() map[string]State {
		vms, err := List(sd)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]State{}
		for _, v := range vms {
			m[v.Name()] = v.State
		}
		return m
	}
	if s := states()["child-hold"]; s != Running {
		t.Fatalf("holding child: %v, want running", s)
	}
	vms, _ := List(sd)
	if err := Collect(&vms[0], nil); !errors.Is(err, ErrRunning) {
		t.Errorf("collecting a running VM: %v, want ErrRunning", err)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if s := states()["child-hold"]; s != Crashed {
		t.Fatalf("killed child: %v, want crashed", s)
	}
	if out := runChild(t, "end", sd, nil); out != "ended\n" {
		t.Fatalf("end child: %q", out)
	}
	if s := states()["child-end"]; s != Ended {
		t.Errorf("child that recorded its end: %v, want ended", s)
	}
	vms, _ = List(sd)
	for i := range vms {
		v := &vms[i]
		want := v.State == Crashed
		if got := v.ClaimCrashReport(); got != want {
			t.Errorf("%s: first claim %v", v.Name(), got)
		}
		if v.ClaimCrashReport() {
			t.Errorf("%s: crash claimed twice", v.Name())
		}
		called := false
		if err := Collect(v, func() error { called = true; return nil }); err != nil || !called {
			t.Errorf("collect %s: %v (before called: %v)", v.Name(), err, called)
		}
	}
	if vms, _ := List(sd); len(vms) != 0 {
		t.Errorf("after collecting: %d VMs", len(vms))
	}
}

func register100(t testing.TB, sd string) []*Entry {
	var es []*Entry
	for i := range 100 {
		e, err := Register(sd, testRecord(newIDOrDie(), "vm-"+strconv.Itoa(i)))
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, e)
	}
	return es
}

func TestList100(t *testing.T) {
	sd := t.TempDir()
	es := register100(t, sd)
	for _, e := range es[:10] {
		e.Update(func(r *Record) { r.Ended = &End{Reason: "power-off"} })
		e.Close()
	}
	for _, e := range es[10:20] {
		e.Close() // crashed: the lock is free, no end recorded
	}
	t0 := time.Now()
	vms, err := List(sd)
	took := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	count := map[State]int{}
	names := map[string]bool{}
	for _, v := range vms {
		count[v.State]++
		names[v.Name()] = true
	}
	if len(vms) != 100 || len(names) != 100 || count[Running] != 80 || count[Ended] != 10 || count[Crashed] != 10 {
		t.Errorf("listed %d VMs, %d names, states %v", len(vms), len(names), count)
	}
	if took > 100*time.Millisecond {
		t.Errorf("listing 100 VMs took %v, more than 100 ms", took)
	}
	for _, e := range es {
		e.Close()
	}
}

func BenchmarkList100(b *testing.B) {
	sd := b.TempDir()
	es := register100(b, sd)
	defer func() {
		for _, e := range es {
			e.Close()
		}
	}()
	for b.Loop() {
		if vms, err := List(sd); err != nil || len(vms) != 100 {
			b.Fatal(len(vms), err)
		}
	}
}

func TestCorruptRecordListed(t *testing.T) {
	sd := t.TempDir()
	e, err := Register(sd, testRecord(newIDOrDie(), "broken"))
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	os.WriteFile(filepath.Join(e.Dir(), RecordFile), []byte(`{"version":1,"id":`), 0o600)
	vms, err := List(sd)
	if err != nil || len(vms) != 1 {
		t.Fatal(vms, err)
	}
	if v := vms[0]; v.State != Corrupt || !strings.Contains(v.Err.Error(), e.Dir()+"/record.json: corrupt record: truncated JSON") {
		t.Errorf("corrupt record: state %v, err %v", v.State, v.Err)
	}
	if err := Collect(&vms[0], nil); err != nil {
		t.Errorf("collect corrupt: %v", err)
	}
}

func TestResolve(t *testing.T) {
	rec := func(id, name string) VM { return VM{ID: id, Record: &Record{ID: id, Name: name}} }
	vms := []VM{rec("aaaa000000000001", "web"), rec("aaaa000000000002", "db"), rec("bbbb000000000003", "web2"), rec("cccc000000000004", "dup"), rec("dddd000000000005", "dup")}
	for q, want := range map[string]string{"aaaa000000000002": "aaaa000000000002", "web": "aaaa000000000001", "bbb": "bbbb000000000003", "db": "aaaa000000000002"} {
		v, err := Resolve(vms, q)
		if err != nil || v.ID != want {
			t.Errorf("Resolve(%q) = %v, %v; want %s", q, v, err, want)
		}
	}
	_, err := Resolve(vms, "aaaa")
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), `ID prefix "aaaa" matches 2 VMs: aaaa000000000001 (web), aaaa000000000002 (db); give more of the ID`) {
		t.Errorf("ambiguous prefix: %v", err)
	}
	if _, err := Resolve(vms, "dup"); !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), `name "dup" matches 2 VMs`) {
		t.Errorf("ambiguous name: %v", err)
	}
	// A name that is another VM's ID prefix: both are named.
	vms = append(vms, rec("eeee000000000006", "cccc"))
	if _, err := Resolve(vms, "cccc"); !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), `name or ID prefix "cccc" matches 2 VMs: cccc000000000004 (dup), eeee000000000006 (cccc)`) {
		t.Errorf("name that is an ID prefix: %v", err)
	}
	if _, err := Resolve(vms, "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `nothing has the ID or name "nope"`) {
		t.Errorf("no match: %v", err)
	}
}

// TestStateDirNotWritable: a user who cannot write the state directory
// is told so, with the way out.
func TestStateDirNotWritable(t *testing.T) {
	mustRoot(t)
	d := openDir(t) // readable, not writable, by nobody
	out := runChild(t, "register", d, nil)
	if !strings.HasPrefix(out, "ok") {
		t.Fatalf("root: %s", out)
	}
	out = runChild(t, "register", filepath.Join(d, "sub"), nobody)
	want := fmt.Sprintf("error: inventory: state directory %s/sub is not writable by uid 65534 (set $CORRAL_STATE_DIR to a directory you can write)", d)
	if !strings.HasPrefix(out, want) {
		t.Errorf("nobody registering in a root directory:\n got %q\nwant %q...", out, want)
	}
}

// TestOwnVMsOnly: in a state directory shared by users, a user lists only
// their own VMs; root lists all.
func TestOwnVMsOnly(t *testing.T) {
	mustRoot(t)
	sd := sharedDir(t)
	e, err := Register(sd, testRecord(newIDOrDie(), "roots"))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, line := startChild(t, "hold", sd, nobody)
	if line != "ready" {
		t.Fatalf("nobody's VMM: %s", line)
	}
	if got := runChild(t, "list", sd, nobody); got != "child-hold running\n" {
		t.Errorf("nobody lists %q, want only its own VM", got)
	}
	vms, err := List(sd)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for _, v := range vms {
		owners[v.Name()] = v.Owner
	}
	if len(vms) != 2 || owners["roots"] != 0 || owners["child-hold"] != 65534 {
		t.Errorf("root lists %v, want both VMs with their owners", owners)
	}
}

// TestStateDirDefaults: $CORRAL_STATE_DIR, then /run/corral for root,
// $XDG_RUNTIME_DIR/corral, corral-<uid> in the temporary directory (the
// rule hostnet.StateDir has always had).
func TestStateDirDefaults(t *testing.T) {
	t.Setenv(StateDirEnv, "/x/state")
	if d := StateDir(); d != "/x/state" {
		t.Errorf("with $%s: %s", StateDirEnv, d)
	}
	t.Setenv(StateDirEnv, "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/65534")
	if os.Geteuid() == 0 {
		if d := StateDir(); d != "/run/corral" {
			t.Errorf("root: %s", d)
		}
		if out := runChild(t, "statedir", "", nobody); out != "/run/user/65534/corral\n" {
			t.Errorf("nobody with XDG_RUNTIME_DIR: %q", out)
		}
		t.Setenv("XDG_RUNTIME_DIR", "")
		if out, want := runChild(t, "statedir", "", nobody), filepath.Join(os.TempDir(), "corral-65534")+"\n"; out != want {
			t.Errorf("nobody without XDG_RUNTIME_DIR: %q, want %q", out, want)
		}
	}
}

// fakeClock is a clock set by the test.
type fakeClock struct {
	now  time.Time
	boot time.Duration
}

func (c fakeClock) Now() time.Time          { return c.now }
func (c fakeClock) Boottime() time.Duration { return c.boot }

// TestCalendarDoesNotMatter: ages and TTLs are the same whatever the wall
// clock says: 2038-01-19T03:14:08Z, after 2106-02-07, or stepped back.
func TestCalendarDoesNotMatter(t *testing.T) {
	r := &Record{ID: "0123456789abcdef", BootID: "b", Created: time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC),
		Started: Duration(100 * time.Second), TTL: Duration(time.Minute)}
	vm := VM{State: Running, Record: r}
	var ages, lefts []time.Duration
	for _, now := range []time.Time{
		time.Date(2026, 12, 6, 0, 0, 30, 0, time.UTC),
		time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC),
		time.Date(2106, 2, 7, 6, 28, 17, 0, time.UTC),
		time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC), // stepped backwards
	} {
		c := fakeClock{now: now, boot: 130 * time.Second}
		age, ok1 := vm.Age(c, "b")
		left, ok2 := vm.TTLLeft(c, "b")
		if !ok1 || !ok2 {
			t.Fatalf("%v: age/ttl unknown", now)
		}
		ages, lefts = append(ages, age), append(lefts, left)
	}
	for i := range ages {
		if ages[i] != 30*time.Second || lefts[i] != 30*time.Second {
			t.Errorf("clock %d: age %v, TTL left %v; want 30s and 30s", i, ages[i], lefts[i])
		}
	}
	if _, ok := vm.Age(fakeClock{boot: time.Hour}, "other-boot"); ok {
		t.Error("age of a record from another boot")
	}
}

// sleepForever blocks for good. A bare select {} would not: in a binary
// built with CGO_ENABLED=0 (as tests/tcgkvm builds them) the runtime sees
// no goroutine that can run and ends the process with a deadlock error.
func sleepForever() {
	for {
		time.Sleep(time.Hour)
	}
}
