package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/syncbuf"
	"github.com/u-root/u-root/pkg/cpio"
)

func feed(lines string) *consoleLog {
	c := &consoleLog{}
	for _, l := range strings.Split(lines, "\n") {
		c.Line(l + "\r")
	}
	return c
}

func TestConsolePassFailSkip(t *testing.T) {
	c := feed(`tcgkvm: init at 2.31s, 2 cpus, svm=2 npt=2
tcgkvm: /dev/kvm ready at 3.23s
tcgkvm: run example.com/a at 3.26s
=== RUN   TestA
--- PASS: TestA (0.00s)
--- SKIP: TestB (0.00s)
--- FAIL: TestC (0.10s)
    --- FAIL: TestC/sub (0.10s)
FAIL
tcgkvm: result example.com/a exit=1 start=3.26s end=5.76s
tcgkvm: run example.com/b at 5.80s
--- PASS: TestD (0.00s)
    --- PASS: TestD/x (0.00s)
tcgkvm: result example.com/b exit=0 start=5.80s end=6.00s
tcgkvm: done status=1`)
	if len(c.Results) != 2 {
		t.Fatalf("results = %+v", c.Results)
	}
	a, b := c.Results[0], c.Results[1]
	if a.Pass != 1 || a.Skip != 1 || a.Fail != 1 || a.Exit != 1 || a.Seconds < 2.49 || a.Seconds > 2.51 {
		t.Errorf("a = %+v", a)
	}
	if len(a.FailedTests) != 1 || a.FailedTests[0] != "TestC" {
		t.Errorf("a failed = %q, want [TestC] (subtests are not counted)", a.FailedTests)
	}
	if b.Pass != 1 || b.Exit != 0 {
		t.Errorf("b = %+v", b)
	}
	err := c.Err()
	if err == nil || !strings.Contains(err.Error(), "example.com/a (exit 1: TestC)") || strings.Contains(err.Error(), "example.com/b") {
		t.Errorf("Err() = %v", err)
	}
	if !strings.Contains(c.Summary(), "example.com/a: exit 1, 1 passed, 1 failed, 1 skipped, 2.5s") {
		t.Errorf("Summary() = %q", c.Summary())
	}
}

func TestConsoleAllPassed(t *testing.T) {
	c := feed("tcgkvm: run p at 1s\n--- PASS: TestA (0.00s)\ntcgkvm: result p exit=0 start=1s end=2s\ntcgkvm: done status=0")
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestConsoleIncomplete(t *testing.T) {
	for name, lines := range map[string]string{
		"crash during a binary": "tcgkvm: run p at 1s\n--- PASS: TestA (0.00s)\nKernel panic",
		"no marker at all":      "SeaBIOS",
		"no kvm":                "tcgkvm: insmod kvm-amd failed\ntcgkvm: no /dev/kvm after loading kvm-amd\ntcgkvm: done status=3",
		"status without result": "tcgkvm: done status=1",
	} {
		if err := feed(lines).Err(); err == nil {
			t.Errorf("%s: Err() = nil", name)
		}
	}
	if s := feed("tcgkvm: run p at 1s\n--- PASS: TestA (0.00s)").Summary(); !strings.Contains(s, "p: did not finish, 1 passed") {
		t.Errorf("Summary() of an unfinished binary = %q", s)
	}
	if err := feed("tcgkvm: insmod kvm-amd failed\ntcgkvm: done status=3").Err(); err == nil || !strings.Contains(err.Error(), "insmod kvm-amd failed") {
		t.Errorf("no kvm: Err() = %v, want the insmod line", err)
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "-test.run=Hello|SMP", "a b", `it's "x" $HOME \`, "*"} {
		out, err := exec.Command("sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != s {
			t.Errorf("sh saw %q, want %q", out, s)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	targets, args := splitArgs([]string{"./kvm", ".", "--", "-test.short", "--"})
	if strings.Join(targets, " ") != "./kvm ." || strings.Join(args, " ") != "-test.short --" {
		t.Errorf("splitArgs = %q, %q", targets, args)
	}
}

func TestInitramfsContents(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, data string) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, m := range modules {
		write("mods/"+m+".ko", "module "+m)
	}
	write("pkg/testdata/seeds/a", "seed")
	spec := initramfsSpec{
		Busybox: write("busybox", "bb"),
		Kernel:  l1Kernel{ModDir: filepath.Join(dir, "mods")},
		Tests: []testBinary{{Name: "example.com/p", Path: write("bin/0-p.test", "elf"),
			Testdata: filepath.Join(dir, "pkg/testdata")}},
		TestArgs:  []string{"-test.run=A|B"},
		Guests:    []guestELF{{Rel: "0123abcd/hello.elf", Host: write("g/hello.elf", "guest")}},
		GCCPath:   "/usr/bin/gcc",
		GCCAnswer: "12.2.0\nx86_64-linux-gnu\n",
		Require:   "kvm,root",

		LinuxKernel: write("k/vmlinux", "kernel"),
		Agent:       write("a/corral-agent", "agent"),
		L2Cmdline:   "nopv it's",
	}
	var buf bytes.Buffer
	if err := writeInitramfs(&buf, spec); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	seen := map[string]bool{}
	r := cpio.Newc.Reader(bytes.NewReader(buf.Bytes()))
	for {
		rec, err := r.ReadRecord()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if d := filepath.Dir(rec.Name); d != "." && !seen[d] {
			t.Errorf("%s comes before its directory %s", rec.Name, d)
		}
		seen[rec.Name] = true
		if rec.Mode&cpio.S_IFMT == cpio.S_IFREG {
			b, _ := io.ReadAll(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
			got[rec.Name] = string(b)
		}
	}
	for name, want := range map[string]string{
		"bin/busybox": "bb", "modules/kvm-amd.ko": "module kvm-amd", "pkg/0/0-p.test": "elf",
		"pkg/0/testdata/seeds/a": "seed", "guests/0123abcd/hello.elf": "guest",
		"etc/tcgkvm/gcc-version": spec.GCCAnswer, "usr/bin/gcc": gccShim,
		"linux/vmlinux": "kernel", "linux/corral-agent": "agent",
	} {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	if !seen["dev/console"] {
		t.Error("no dev/console")
	}
	init := got["init"]
	for _, want := range []string{"insmod /modules/irqbypass.ko", "CORRAL_GUEST_CACHE=/guests CORRAL_REQUIRE='kvm,root'", "cd /pkg/0",
		"./0-p.test '-test.v' '-test.run=A|B'", "tcgkvm: result example.com/p exit=$rc", "poweroff -f",
		"export CORRAL_TCGKVM=1 CORRAL_TCGKVM_CMDLINE='nopv it'\\''s'\n",
		"export CORRAL_KERNEL='/linux/vmlinux'\n", "export CORRAL_AGENT=/linux/corral-agent\n"} {
		if !strings.Contains(init, want) {
			t.Errorf("init lacks %q:\n%s", want, init)
		}
	}
	if strings.Index(init, "insmod /modules/kvm.ko") > strings.Index(init, "insmod /modules/kvm-amd.ko") {
		t.Error("init loads kvm-amd before kvm")
	}
}

func TestInitramfsWithoutLinux(t *testing.T) {
	init := initScript(initramfsSpec{Require: "kvm"})
	if strings.Contains(init, "CORRAL_KERNEL") || strings.Contains(init, "CORRAL_AGENT") {
		t.Errorf("init exports a kernel or agent it was not given:\n%s", init)
	}
	if !strings.Contains(init, "export CORRAL_TCGKVM=1 CORRAL_TCGKVM_CMDLINE=''\n") {
		t.Errorf("init does not mark the VM:\n%s", init)
	}
}

func TestPick(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	found := func(p string) func() (string, error) { return func() (string, error) { return p, nil } }
	failed := func() (string, error) { return "", errors.New("find failed") }
	const env = "TCGKVM_TEST_PICK"
	for _, c := range []struct {
		flag, env string
		find      func() (string, error)
		want      string
		wantErr   bool
	}{
		{flag: "none", env: file, find: failed, want: ""},
		{flag: "auto", env: file, find: failed, want: file},
		{flag: "", env: file, find: failed, want: file},
		{flag: "auto", env: "", find: found("/from/find"), want: "/from/find"},
		{flag: "auto", env: "", find: found(""), want: ""},
		{flag: "auto", env: "", find: failed, wantErr: true},
		{flag: "auto", env: filepath.Join(dir, "missing"), find: found("x"), wantErr: true},
		{flag: file, env: "", find: failed, want: file},
		{flag: filepath.Join(dir, "missing"), env: file, find: found("x"), wantErr: true},
	} {
		t.Setenv(env, c.env)
		got, err := pick(c.flag, env, c.find)
		if (err != nil) != c.wantErr || got != c.want {
			t.Errorf("pick(%q) with $%s=%q = %q, %v; want %q (error %v)", c.flag, env, c.env, got, err, c.want, c.wantErr)
		}
	}
}

// A shipped Linux kernel is required in the VM: the Linux guest tests
// fail there rather than skip.
func TestRequireKernel(t *testing.T) {
	for _, c := range []struct{ require, kernel, want string }{
		{"kvm,root", "/k", "kvm,root,kernel"},
		{"kvm,root", "", "kvm,root"},
		{"kvm, kernel", "/k", "kvm, kernel"},
		{"", "/k", "kernel"},
	} {
		if got := requireKernel(c.require, c.kernel); got != c.want {
			t.Errorf("requireKernel(%q, %q) = %q, want %q", c.require, c.kernel, got, c.want)
		}
	}
}

// TestSplitFinished: after the L1 kernel stopped, binaries that reached
// their result line keep it (a failure too), and the one that was running
// and those not started are booted again.
func TestSplitFinished(t *testing.T) {
	c := feed(`tcgkvm: run example.com/a at 3.26s
--- PASS: TestA (0.00s)
tcgkvm: result example.com/a exit=0 start=3.26s end=5.76s
tcgkvm: run example.com/b at 5.80s
--- FAIL: TestB (0.00s)
tcgkvm: result example.com/b exit=1 start=5.80s end=6.00s
tcgkvm: run example.com/c at 6.10s
--- PASS: TestC1 (0.00s)`)
	tests := []testBinary{{Name: "example.com/a"}, {Name: "example.com/b"}, {Name: "example.com/c"}, {Name: "example.com/d"}}
	done, left := splitFinished(tests, c)
	if len(done) != 2 || done[0].Name != "example.com/a" || done[0].Exit != 0 || done[1].Name != "example.com/b" || done[1].Exit != 1 {
		t.Errorf("done %+v, want a (exit 0) and b (exit 1)", done)
	}
	if len(left) != 2 || left[0].Name != "example.com/c" || left[1].Name != "example.com/d" {
		t.Errorf("left %+v, want c (was running) and d", left)
	}
	// The retry's console holds only c and d; together with the kept
	// results b's failure still fails the run.
	r := feed(`tcgkvm: run example.com/c at 3.00s
tcgkvm: result example.com/c exit=0 start=3.00s end=4.00s
tcgkvm: run example.com/d at 4.10s
tcgkvm: result example.com/d exit=0 start=4.10s end=5.00s
tcgkvm: done status=0`)
	r.Results = append(done, r.Results...)
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "example.com/b") {
		t.Errorf("Err after a retry: %v, want b's failure", err)
	}
}

func TestFailRetry(t *testing.T) {
	c := feed(`tcgkvm: run example.com/a at 3.26s
--- PASS: TestA (0.00s)
--- FAIL: TestB (0.00s)
--- FAIL: TestC.x (0.00s)
FAIL
tcgkvm: result example.com/a exit=1 start=3.26s end=5.76s
tcgkvm: run example.com/b at 5.80s
--- FAIL: TestD (0.00s)
panic: test timed out after 20m0s
tcgkvm: result example.com/b exit=2 start=5.80s end=6.00s
tcgkvm: run example.com/c at 6.10s
--- FAIL: TestE (0.00s)
FAIL
tcgkvm: result example.com/c exit=1 start=6.10s end=7.00s
tcgkvm: done status=1`)
	tests := []testBinary{{Name: "example.com/a", Args: []string{"-x"}}, {Name: "example.com/b"}, {Name: "example.com/c"}}
	retry := failedTests(tests, c)
	// b panicked: tests after TestD may never have run, so its failure
	// stands without a retry.
	if len(retry) != 2 || retry[0].Name != "example.com/a" || retry[1].Name != "example.com/c" {
		t.Fatalf("retry = %+v, want a and c", retry)
	}
	if want := []string{"-x", `-test.run=^(TestB|TestC\.x)$`}; !slices.Equal(retry[0].Args, want) {
		t.Errorf("a's args = %q, want %q", retry[0].Args, want)
	}
	if tests[0].Args[0] != "-x" || len(tests[0].Args) != 1 {
		t.Errorf("failedTests changed its input: %q", tests[0].Args)
	}
	init := initScript(initramfsSpec{Tests: retry, TestArgs: []string{"-test.run=A"}})
	if !strings.Contains(init, `'-test.v' '-test.run=A' '-x' '-test.run=^(TestB|TestC\.x)$'`) {
		t.Errorf("init does not run a's failed tests last:\n%s", init)
	}
	// a's failed tests pass this time; c's fails again.
	r := feed(`tcgkvm: run example.com/a at 3.00s
--- PASS: TestB (0.00s)
--- PASS: TestC.x (0.00s)
PASS
tcgkvm: result example.com/a exit=0 start=3.00s end=4.00s
tcgkvm: run example.com/c at 4.10s
--- FAIL: TestE (0.00s)
FAIL
tcgkvm: result example.com/c exit=1 start=4.10s end=5.00s
tcgkvm: done status=1`)
	flaky := c.merge(r)
	if want := []string{"example.com/a: TestB", "example.com/a: TestC.x"}; !slices.Equal(flaky, want) {
		t.Errorf("flaky = %q, want %q", flaky, want)
	}
	if a := c.Results[0]; a.Exit != 0 || a.Pass != 3 || a.Fail != 0 {
		t.Errorf("a after the retry = %+v, want passed (3 passed)", a)
	}
	err := c.Err()
	if err == nil || strings.Contains(err.Error(), "example.com/a") || !strings.Contains(err.Error(), "example.com/b") || !strings.Contains(err.Error(), "example.com/c") {
		t.Errorf("Err() = %v, want b's and c's failures only", err)
	}
	// A retry that ran fewer tests than had failed (a name that matched
	// nothing) does not pass the binary.
	c2 := feed(`tcgkvm: run example.com/a at 3.26s
--- FAIL: TestB (0.00s)
--- FAIL: TestC (0.00s)
FAIL
tcgkvm: result example.com/a exit=1 start=3.26s end=5.76s
tcgkvm: done status=1`)
	r2 := feed(`tcgkvm: run example.com/a at 3.00s
--- PASS: TestB (0.00s)
PASS
tcgkvm: result example.com/a exit=0 start=3.00s end=4.00s
tcgkvm: done status=0`)
	if flaky := c2.merge(r2); len(flaky) != 0 || c2.Err() == nil {
		t.Errorf("partial retry: flaky %q, Err %v; want none and a failure", flaky, c2.Err())
	}
}

func TestStallResume(t *testing.T) {
	// The L1 kernel stopped during b's TestB3: b's next boot skips what b
	// had finished and its result counts both boots.
	c := feed(`tcgkvm: run example.com/b at 5.80s
--- PASS: TestB1 (0.00s)
    --- PASS: TestB1/sub (0.00s)
--- FAIL: TestB2 (0.00s)
--- SKIP: TestB0 (0.00s)
=== RUN   TestB3`)
	prior := map[string]binaryResult{}
	r := c.Results[0]
	if r.Exit >= 0 || !slices.Equal(r.Passed, []string{"TestB1"}) {
		t.Fatalf("stalled b = %+v, want unfinished with TestB1 passed", r)
	}
	prior[r.Name] = withPrior(prior, r)
	args := resumeArgs([]string{"-x"}, prior["example.com/b"])
	if want := []string{"-x", `-test.skip=^(TestB0|TestB1|TestB2)$`}; !slices.Equal(args, want) {
		t.Errorf("resume args = %q, want %q", args, want)
	}
	if got := resumeArgs([]string{"-x"}, prior["example.com/other"]); !slices.Equal(got, []string{"-x"}) {
		t.Errorf("args of a binary with nothing finished = %q, want its own", got)
	}
	// A second stall during TestB4 adds to what the first boot kept.
	c2 := feed(`tcgkvm: run example.com/b at 3.00s
--- PASS: TestB3 (0.00s)
=== RUN   TestB4`)
	prior["example.com/b"] = withPrior(prior, c2.Results[0])
	args = resumeArgs(nil, prior["example.com/b"])
	if want := []string{`-test.skip=^(TestB0|TestB1|TestB2|TestB3)$`}; !slices.Equal(args, want) {
		t.Errorf("after a second stall: %q, want %q", args, want)
	}
	final := feed(`tcgkvm: run example.com/b at 3.00s
--- PASS: TestB4 (0.00s)
PASS
tcgkvm: result example.com/b exit=0 start=3.00s end=4.00s
tcgkvm: done status=0`)
	b := withPrior(prior, final.Results[0])
	if b.Pass != 3 || b.Fail != 1 || b.Skip != 1 || !slices.Equal(b.FailedTests, []string{"TestB2"}) {
		t.Errorf("b over three boots = %+v, want 3 passed, TestB2 failed, 1 skipped", b)
	}
	// TestB2 failed before the stall: the binary fails although its last
	// boot passed, and a fail retry runs TestB2 again.
	if b.Exit != 1 || !b.Ended {
		t.Errorf("b exit %d ended %v, want exit 1 (TestB2 failed in the first boot), ended", b.Exit, b.Ended)
	}
	final.Results[0] = b
	if err := final.Err(); err == nil || !strings.Contains(err.Error(), "TestB2") {
		t.Errorf("Err() = %v, want TestB2's failure", err)
	}
	if retry := failedTests([]testBinary{{Name: "example.com/b"}}, final); len(retry) != 1 || !slices.Equal(retry[0].Args, []string{`-test.run=^(TestB2)$`}) {
		t.Errorf("fail retry = %+v, want TestB2 alone", retry)
	}
}

func TestWatchConsole(t *testing.T) {
	const hb = 50 * time.Millisecond
	noMonitor := filepath.Join(t.TempDir(), "none.sock")

	// Silent throughout: one kick (a newline on the serial port), then
	// killed with a reason.
	var last atomic.Int64
	last.Store(time.Now().UnixNano())
	var in syncbuf.Buffer
	killed := make(chan struct{})
	why := watchConsole(context.Background(), hb, &last, noMonitor, &in, func() { close(killed) })
	select {
	case <-killed:
	default:
		t.Fatal("a silent console was not killed")
	}
	if !strings.Contains(why, "silent") || in.String() != "\n" {
		t.Errorf("why %q, serial input %q; want silence named and one newline sent", why, in.String())
	}

	// The console speaks again after the kick: not killed.
	last.Store(time.Now().UnixNano())
	var in2 syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan string)
	go func() {
		done <- watchConsole(ctx, hb, &last, noMonitor, &in2, func() { t.Error("killed a console that spoke after the kick") })
	}()
	for in2.String() == "" {
		time.Sleep(hb / 10)
	}
	// Keep speaking for a while, as a woken kernel's heartbeat would.
	for end := time.Now().Add(5 * hb); time.Now().Before(end); time.Sleep(hb / 2) {
		last.Store(time.Now().UnixNano())
	}
	cancel()
	if why := <-done; why != "" {
		t.Errorf("watchConsole = %q after ctx ended, want \"\"", why)
	}
}

func TestNudge(t *testing.T) {
	var in syncbuf.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { nudge(ctx, 10*time.Millisecond, &in); close(done) }()
	for strings.Count(in.String(), "\n") < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if s := in.String(); strings.Trim(s, "\n") != "" {
		t.Errorf("nudge wrote %q, want newlines only", s)
	}
}
