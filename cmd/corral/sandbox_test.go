package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/sandbox"
	"github.com/corral-vmm/corral/tests/guests"
)

// sandboxChildEnv holds the JSON arguments of a corral command that this
// test binary, run again, executes in a process of its own: confinement
// is once per process, so it cannot happen in the test process.
const sandboxChildEnv = "CORRAL_SANDBOX_CLI_CHILD"

func TestSandboxCLIChild(t *testing.T) {
	v := os.Getenv(sandboxChildEnv)
	if v == "" {
		t.Skip("only a child of the sandbox tests")
	}
	var args []string
	if err := json.Unmarshal([]byte(v), &args); err != nil {
		t.Fatal(err)
	}
	os.Exit(run(context.Background(), args, os.Stdin, os.Stdout, os.Stderr))
}

// sandboxedCorral returns a command running corral args in a child, with
// the inventory and audit trail in a temporary directory.
func sandboxedCorral(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	return sandboxedCorralIn(t, t.TempDir(), args...)
}

// sandboxedCorralIn is sandboxedCorral with the inventory in state, for
// tests that talk to the child's VM.
func sandboxedCorralIn(t testing.TB, state string, args ...string) *exec.Cmd {
	t.Helper()
	if !sandbox.AllThreadsSupported() {
		args = append(args, "--caps=keep") // a cgo (-race) test binary cannot drop them on every thread
	}
	js, err := json.Marshal(args)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSandboxCLIChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), sandboxChildEnv+"="+string(js),
		"CORRAL_STATE_DIR="+state, "CORRAL_AUDIT_LOG="+filepath.Join(state, "audit", "audit.jsonl"))
	return cmd
}

func TestSandboxFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--seccomp", "maybe"}, `seccomp mode "maybe": want on, log or off`},
		{[]string{"--landlock", "yes"}, `landlock "yes": want on or off`},
		{[]string{"--caps", "some"}, `caps "some": want drop or keep`},
		{[]string{"--user", "bob"}, `user "bob": UID: want a number`},
		{[]string{"--user", "1000:staff"}, `user "1000:staff": GID: want a number`},
	} {
		var errb bytes.Buffer
		fs, _ := newRunFlags(&errb)
		if err := fs.Parse(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
	var errb bytes.Buffer
	fs, o := newRunFlags(&errb)
	if err := fs.Parse([]string{"--seccomp=log", "--landlock=off", "--caps=keep", "--user=1000"}); err != nil {
		t.Fatal(err)
	}
	f := o.sandbox
	if f.seccomp != sandbox.SeccompLog || f.landlock || !f.caps || *f.user != (sandbox.User{UID: 1000, GID: 1000}) || !f.set {
		t.Errorf("parsed: %+v", f)
	}
	if _, o := newRunFlags(&errb); o.sandbox.seccomp != sandbox.SeccompEnforce || !o.sandbox.landlock || o.sandbox.caps || o.sandbox.set {
		t.Errorf("defaults: %+v", o.sandbox)
	}
}

// The policy names every file the machine uses, read-only ones for
// reading only.
func TestSandboxPolicyPaths(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	cfg := corral.Config{Kernel: "/k", Initrd: "/i", StateDir: state,
		Disks:  []corral.Disk{{Path: "/rw.img"}, {Path: "/ro.img", ReadOnly: true}},
		Shares: []corral.Share{{Path: "/srv", Tag: "s"}, {Path: "/pub", Tag: "p", ReadOnly: true}},
		Vsock:  &corral.Vsock{UDSPath: "/run/x/v.sock"}}
	t.Setenv("CORRAL_AUDIT_LOG", filepath.Join(dir, "audit", "a.jsonl"))
	p, err := sandboxPolicy(&sandboxFlags{landlock: true}, &cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(p.ReadPaths, " "), "/proc/self /proc/sys/kernel/random/boot_id /k /i /ro.img /pub"; got != want {
		t.Errorf("read paths %q, want %q", got, want)
	}
	if got, want := strings.Join(p.WritePaths, " "), "/rw.img /srv /run/x "+state+" "+filepath.Join(dir, "audit"); got != want {
		t.Errorf("write paths %q, want %q", got, want)
	}
	for _, d := range []string{state, filepath.Join(dir, "audit")} {
		if st, err := os.Stat(d); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("%s not created 0700: %v", d, err)
		}
	}
}

// exitOf returns a finished command's exit status, or -signal.
func exitOf(err error) int {
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		return -1000
	}
	if ws := ee.Sys().(syscall.WaitStatus); ws.Signaled() {
		return -int(ws.Signal())
	}
	return ee.ExitCode()
}

// corral run, confined by default, runs test guests to their end: hello;
// blk writing and reading a disk; net getting a DHCP lease from the
// built-in server over a socket pair (fd=3, no root needed).
func TestRunSandboxedGuests(t *testing.T) {
	testenv.MustHaveKVM(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		args    []string
		net     bool // pass one end of a SOCK_SEQPACKET pair as fd 3
		want    int
		wantOut string
	}{
		{"hello", []string{"--kernel", guests.BuildT(t, "hello"), "--cmdline", "exit=42"}, false, 42, ""},
		{"blk", []string{"--kernel", guests.BuildT(t, "blk"), "--disk", disk, "--cmdline", "read=0 write=1 badreq=1"}, false, 0, "verified"},
		{"net", []string{"--kernel", guests.BuildT(t, "net"), "--net", "fd=3,host=10.0.9.1/24"}, true, 0, "net: lease 10.0.9.2/24"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := sandboxedCorral(t, append([]string{"run", "--memory", "64M", "--seccomp=on", "--log=info"}, c.args...)...)
			if c.net {
				fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
				if err != nil {
					t.Fatal(err)
				}
				mine, theirs := os.NewFile(uintptr(fds[0]), "host end"), os.NewFile(uintptr(fds[1]), "vm end")
				defer mine.Close()
				defer theirs.Close()
				cmd.ExtraFiles = []*os.File{theirs}
			}
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			if got := exitOf(err); got != c.want || strings.Contains(errb.String(), "forbidden system call") || !strings.Contains(out.String(), c.wantOut) {
				t.Errorf("exit %d (%v), want %d and %q\nstdout:\n%s\nstderr:\n%s", got, err, c.want, c.wantOut, out.String(), errb.String())
			}
			if !strings.Contains(errb.String(), "sandbox.applied") {
				t.Errorf("no sandbox.applied log line:\n%s", errb.String())
			}
		})
	}
}

// A running, confined VMM shows Seccomp 2, NoNewPrivs 1 and no
// capabilities on every thread, and still stops cleanly on SIGTERM.
func TestRunSandboxedStatus(t *testing.T) {
	testenv.MustHaveKVM(t)
	cmd := sandboxedCorral(t, "run", "--kernel", guests.BuildT(t, "spin"), "--memory", "64M", "--cpus", "2", "--seccomp=on")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	spinning := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "spinning") {
				spinning <- true
			}
		}
		close(spinning)
	}()
	select {
	case ok := <-spinning:
		if !ok {
			cmd.Wait()
			t.Fatalf("spin ended before spinning: %s", errb.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("spin not spinning after a minute: %s", errb.String())
	}
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", cmd.Process.Pid))
	if err != nil || len(tasks) < 3 {
		t.Fatalf("%d threads (%v)", len(tasks), err)
	}
	wants := []string{"Seccomp:\t2\n", "NoNewPrivs:\t1\n"}
	if sandbox.AllThreadsSupported() { // a cgo test binary keeps them (see sandbox.ErrAllThreads)
		wants = append(wants, "CapEff:\t0000000000000000\n", "CapPrm:\t0000000000000000\n")
	}
	for _, task := range tasks {
		st, err := os.ReadFile(task)
		if err != nil {
			continue // a thread that just ended
		}
		for _, w := range wants {
			if !bytes.Contains(st, []byte(w)) {
				t.Errorf("%s lacks %q", task, strings.TrimSpace(w))
			}
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	err = cmd.Wait()
	if got := exitOf(err); got != 128+int(syscall.SIGTERM) || strings.Contains(errb.String(), "forbidden") {
		t.Errorf("after SIGTERM: exit %d (%v), want %d; stderr:\n%s", got, err, 128+int(syscall.SIGTERM), errb.String())
	}
}

// BenchmarkRunHelloSandbox is corral run of the hello guest, start to exit
// (a child process each, as a user would run it), confined by default and
// with every layer off: the confinement's cost is the difference.
func BenchmarkRunHelloSandbox(b *testing.B) {
	testenv.MustHaveKVM(b)
	hello := guests.BuildT(b, "hello")
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"confined", []string{"--seccomp=on"}},
		{"off", []string{"--seccomp=off", "--landlock=off", "--caps=keep"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			args := append([]string{"run", "--kernel", hello, "--cmdline", "exit=7", "--memory", "64M"}, c.flags...)
			for b.Loop() {
				cmd := sandboxedCorral(b, args...)
				if out, err := cmd.CombinedOutput(); exitOf(err) != 7 {
					b.Fatalf("exit %v: %s", err, out)
				}
			}
		})
	}
}

// BenchmarkRunHelloSandboxLayers runs hello (as BenchmarkRunHelloSandbox)
// with every layer off, each layer alone and all of them, the variants
// taking turns within each op so that drift in the host's load falls on
// all alike. It reports each variant's mean start-to-exit time in ms and
// the mean time sandbox.Apply itself took in the confined run (from its
// log line's took=).
func BenchmarkRunHelloSandboxLayers(b *testing.B) {
	testenv.MustHaveKVM(b)
	hello := guests.BuildT(b, "hello")
	variants := []struct {
		name  string
		flags []string
	}{
		{"off", []string{"--seccomp=off", "--landlock=off", "--caps=keep"}},
		{"seccomp", []string{"--seccomp=on", "--landlock=off", "--caps=keep"}},
		{"landlock", []string{"--seccomp=off", "--landlock=on", "--caps=keep"}},
		{"caps", []string{"--seccomp=off", "--landlock=off", "--caps=drop"}},
		{"confined", []string{"--seccomp=on"}},
	}
	sums := make([]time.Duration, len(variants))
	var applied time.Duration
	n := 0
	for b.Loop() {
		for j := range variants {
			v := variants[(j+n)%len(variants)]
			args := append([]string{"run", "--kernel", hello, "--cmdline", "exit=7", "--memory", "64M", "--log=info"}, v.flags...)
			cmd := sandboxedCorral(b, args...)
			start := time.Now()
			out, err := cmd.CombinedOutput()
			sums[(j+n)%len(variants)] += time.Since(start)
			if exitOf(err) != 7 {
				b.Fatalf("%s: exit %v: %s", v.name, err, out)
			}
			if v.name == "confined" {
				took, ok := appliedTook(out)
				if !ok {
					b.Fatalf("no sandbox.applied took= in:\n%s", out)
				}
				applied += took
			}
		}
		n++
	}
	for i, v := range variants {
		b.ReportMetric(float64(sums[i].Microseconds())/1e3/float64(n), v.name+"-ms")
	}
	b.ReportMetric(float64(applied.Microseconds())/1e3/float64(n), "apply-ms")
	b.ReportMetric(0, "ns/op")
}

// appliedTook returns the took= of the sandbox.applied log line in out.
func appliedTook(out []byte) (time.Duration, bool) {
	for line := range strings.SplitSeq(string(out), "\n") {
		if !strings.Contains(line, "sandbox.applied") {
			continue
		}
		_, v, ok := strings.Cut(line, " took=")
		if !ok {
			return 0, false
		}
		v, _, _ = strings.Cut(v, " ")
		d, err := time.ParseDuration(v)
		return d, err == nil
	}
	return 0, false
}
