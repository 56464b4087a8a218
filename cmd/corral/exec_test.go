package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/testkernel"
)

func TestExpandShortFlags(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"-it", "--", "sh", "-it"}, []string{"-i", "-t", "--", "sh", "-it"}},
		{[]string{"-ti", "--cpus", "2", "--", "x"}, []string{"-i", "-t", "--cpus", "2", "--", "x"}},
		{[]string{"sh", "-it"}, []string{"sh", "-it"}}, // no "--": CMD's own
	} {
		if got := expandShortFlags(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("expandShortFlags(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestParseExecArgs(t *testing.T) {
	dir := t.TempDir()
	var errb bytes.Buffer
	o, _, done := parseExecArgs([]string{"-it", "--cpus", "2", "--memory", "512M", "-e", "A=1", "-e", "B",
		"--share", dir + ":/data,ro", "--timeout", "30s", "--ttl", "1h", "--workdir", "/tmp", "--", "sh", "-c", "echo hi"}, &errb)
	if done {
		t.Fatalf("parse failed: %s", errb.String())
	}
	if !o.stdin || !o.tty || o.cfg.CPUs != 2 || o.cfg.Memory != 512<<20 || o.timeout != 30*time.Second || o.cfg.TTL != time.Hour || o.workdir != "/tmp" {
		t.Errorf("options %+v", o)
	}
	if !reflect.DeepEqual(o.env, []string{"A=1", "B"}) {
		t.Errorf("env %q", o.env)
	}
	if !reflect.DeepEqual(o.shares, []agentvm.Share{{Host: dir, Guest: "/data", ReadOnly: true}}) {
		t.Errorf("shares %+v", o.shares)
	}
	if !reflect.DeepEqual(o.argv, []string{"sh", "-c", "echo hi"}) {
		t.Errorf("argv %q", o.argv)
	}
	// Without "--", flags stop at CMD and the rest is CMD's.
	o, _, done = parseExecArgs([]string{"ls", "-l", "--cpus", "3"}, &errb)
	if done || !reflect.DeepEqual(o.argv, []string{"ls", "-l", "--cpus", "3"}) || o.cfg.CPUs != 1 {
		t.Errorf("without --: %+v", o)
	}
}

func TestExecUsageErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	bz := testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047})
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "no command given"},
		{[]string{"--"}, "no command given"},
		{[]string{"--cpus", "0", "--", "true"}, "--cpus 0: must be between 1 and 254"},
		{[]string{"--memory", "0", "--", "true"}, "guest RAM cannot be 0"},
		{[]string{"--timeout", "-1s", "--", "true"}, "--timeout -1s: must not be negative"},
		{[]string{"--agent-timeout", "0s", "--", "true"}, "--agent-timeout 0s: must be positive"},
		{[]string{"--workdir", "rel", "--", "true"}, "--workdir \"rel\": must be an absolute path"},
		{[]string{"--share", "/nonexistent-dir:/x", "--", "true"}, "no such file"},
		{[]string{"--share", file + ":/x", "--", "true"}, "is not a directory"},
		{[]string{"--share", "/tmp", "--", "true"}, "want HOST:GUEST[,ro]"},
		{[]string{"--share", "/tmp:rel", "--", "true"}, "must be absolute"},
		{[]string{"-e", "=x", "--", "true"}, "want K=V or K"},
		{[]string{"--bogus", "--", "true"}, "flag provided but not defined: -bogus"},
		{[]string{"--kernel", bz, "--net", "mac=00:00:00:00:00:00", "--", "true"}, "not a non-zero unicast"},
		{[]string{"--kernel", "/nonexistent", "--", "true"}, "no such file"},
		{[]string{"--kernel", bz, "--disk", "/nonexistent.img", "--", "true"}, "no such file"},
		{[]string{"--kernel", bz, "--root", "/nonexistent", "--", "true"}, "--root: stat /nonexistent"},
		{[]string{"--kernel", bz, "--log", "loud", "--", "true"}, "--log:"},
	} {
		code, _, stderr := runCLI(t, append([]string{"exec"}, tc.args...)...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("corral exec %q: status %d, stderr %q; want %d mentioning %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
	code, out, _ := runCLI(t, "exec", "--help")
	_ = out
	if code != exitOK {
		t.Errorf("exec --help: status %d", code)
	}
}

// TestExecHelpDocumentsEveryFlag walks corral exec's flag set.
func TestExecHelpDocumentsEveryFlag(t *testing.T) {
	fs, _ := newExecFlags(io.Discard)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		if !strings.Contains(execUsageText, name+" ") && !strings.Contains(execUsageText, name+",") {
			t.Errorf("corral exec --help does not document %s", name)
		}
	})
	if n < 15 {
		t.Errorf("only %d flags", n)
	}
	code, out, _ := runCLI(t, "--help")
	if code != exitOK || !strings.Contains(out, "corral exec [flags] -- CMD") {
		t.Errorf("corral --help does not list corral exec")
	}
}

func TestExecEnv(t *testing.T) {
	host := map[string]string{"TERM": "screen", "HOMEDIR": "/home/u"}
	lookup := func(k string) (string, bool) { v, ok := host[k]; return v, ok }
	got := execEnv([]string{"A=1", "HOMEDIR", "UNSET", "A=2", "PATH=/bin"}, true, lookup)
	want := []string{"PATH=/bin", "HOME=/root", "TERM=screen", "A=2", "HOMEDIR=/home/u"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("execEnv = %q, want %q", got, want)
	}
	got = execEnv(nil, false, lookup)
	if want := []string{"PATH=" + execDefaultPath, "HOME=/root"}; !reflect.DeepEqual(got, want) {
		t.Errorf("execEnv without -e = %q, want %q", got, want)
	}
	delete(host, "TERM")
	if got := execEnv(nil, true, lookup); got[2] != "TERM=xterm" {
		t.Errorf("-t without a host TERM: %q", got)
	}
}

func TestExecWorkdir(t *testing.T) {
	wd := func() (string, error) { return "/home/u/src", nil }
	noWd := func() (string, error) { return "", errors.New("deleted") }
	for _, tc := range []struct {
		flag string
		host bool
		wd   func() (string, error)
		want string
	}{
		{"", true, wd, "/home/u/src"},
		{"", false, wd, "/"},
		{"/x", true, wd, "/x"},
		{"", true, noWd, "/"},
	} {
		if got := execWorkdir(tc.flag, tc.host, tc.wd); got != tc.want {
			t.Errorf("execWorkdir(%q, %v) = %q, want %q", tc.flag, tc.host, got, tc.want)
		}
	}
}

func TestWorkdirHidden(t *testing.T) {
	shares := []agentvm.Share{{Host: "/srv/x", Guest: "/tmp/work"}, {Host: "/run/user/1000/s"}}
	for dir, want := range map[string]string{
		"/home/u/src":        "",
		"/tmp":               "/tmp",
		"/tmp/ci/build":      "/tmp",
		"/tmpfoo":            "",
		"/run/lock":          "/run",
		"/dev/shm/x":         "/dev",
		"/tmp/work":          "",
		"/tmp/work/sub":      "",
		"/tmp/workers":       "/tmp",
		"/run/user/1000/s/d": "",
		"/proc/self":         "/proc",
	} {
		if got := workdirHidden(dir, shares); got != want {
			t.Errorf("workdirHidden(%q) = %q, want %q", dir, got, want)
		}
	}
}

// TestExecFakeWorkdirHidden: run from a host directory under /tmp (CI
// workspaces often are), the command would start where the guest has its
// own empty tmpfs: corral exec says so before it boots anything.
func TestExecFakeWorkdirHidden(t *testing.T) {
	h := newExecHarness(t)
	h.wd = "/tmp/ci/build"
	started := false
	h.startFn = func(ctx context.Context, cfg agentvm.Config) (guestVM, error) {
		started = true
		return h.guest, nil
	}
	code, stderr := h.run(nil, io.Discard, "--", "true")
	if code != exitUsage || started || !strings.Contains(stderr, "the current directory /tmp/ci/build is not in the guest: the guest mounts its own /tmp") || !strings.Contains(stderr, "share it") {
		t.Errorf("status %d, started %v, stderr %q; want %d before starting, naming /tmp and --share", code, started, stderr, exitUsage)
	}
	if !strings.Contains(stderr, "--share /tmp/ci/build:/tmp/ci/build") {
		t.Errorf("stderr %q does not give a --share that parses", stderr)
	}
	// Each way out the message names works: a directory under /tmp that
	// exists, as the fake guest runs the command on this host.
	wd, err := os.MkdirTemp("/tmp", "corral-workdir-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(wd) })
	for _, args := range [][]string{{"--workdir", "/"}, {"--share", wd + ":" + wd}, {"--share", wd + ":" + wd + ",ro"}} {
		h := newExecHarness(t)
		h.wd = wd
		if code, stderr := h.run(nil, io.Discard, append(args, "--", "true")...); code != 0 {
			t.Errorf("%q from %s: status %d, stderr %q; want 0", args, wd, code, stderr)
		}
	}
}

func TestExecRoot(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "root.img")
	os.WriteFile(img, nil, 0o644)
	for in, want := range map[string]agentvm.Root{"": agentvm.RootHost(), dir: agentvm.RootDir(dir), img: agentvm.RootImage(img)} {
		if got, err := execRoot(in); err != nil || got != want {
			t.Errorf("execRoot(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := execRoot("/dev/null"); err == nil || !strings.Contains(err.Error(), "neither a directory nor an image") {
		t.Errorf("execRoot(/dev/null) = %v", err)
	}
	if _, err := execRoot(filepath.Join(dir, "none")); err == nil {
		t.Error("execRoot of a missing path succeeded")
	}
}

func TestExecKernel(t *testing.T) {
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if p, c, err := execKernel("/k", lookup); p != "/k" || c != "console=ttyS0 panic=-1" || err != nil {
		t.Errorf("--kernel: %q %q %v", p, c, err)
	}
	env[envKernel] = "/env/k"
	if p, _, err := execKernel("", lookup); p != "/env/k" || err != nil {
		t.Errorf("$CORRAL_KERNEL: %q %v", p, err)
	}
	if p, _, err := execKernel("/k", lookup); p != "/k" || err != nil {
		t.Errorf("--kernel wins over $CORRAL_KERNEL: %q %v", p, err)
	}
}

func TestExecAgentMustBeStatic(t *testing.T) {
	script := filepath.Join(t.TempDir(), "agent")
	os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755)
	lookup := func(k string) (string, bool) { return script, k == agentvm.AgentEnv }
	_, err := execAgent(lookup)
	if err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("execAgent of a script = %v, want a message saying to build static", err)
	}
}

// fakeGuest runs the agent server on this host in place of a VM: commands
// go over socket pairs to a real agent.Server, as they would over vsock.
type fakeGuest struct {
	srv    *agent.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	cfg    agentvm.Config
	killed bool
	closed bool
	mu     sync.Mutex
}

func (g *fakeGuest) Command(name string, args ...string) *client.Cmd {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		panic(err)
	}
	conn := func(fd int) net.Conn {
		f := os.NewFile(uintptr(fd), "sp")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			panic(err)
		}
		return c
	}
	host, guest := conn(fds[0]), conn(fds[1])
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		g.srv.ServeConn(g.ctx, guest)
	}()
	// The machine's end cuts the connection, as vsock's would.
	context.AfterFunc(g.ctx, func() { host.Close() })
	return client.Command(host, name, args...)
}

func (g *fakeGuest) ConsoleTail(n int) []string { return []string{"fake console line"} }

func (g *fakeGuest) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cancel()
	return nil
}

func (g *fakeGuest) Kill() error {
	g.mu.Lock()
	g.killed = true
	g.mu.Unlock()
	g.cancel()
	return nil
}

// execHarness runs execMain against a fakeGuest.
type execHarness struct {
	t       *testing.T
	env     map[string]string
	guest   *fakeGuest
	startFn func(ctx context.Context, cfg agentvm.Config) (guestVM, error)
	warm    *agentvm.Warm // what start was asked for: nil is cold
	sigs    chan<- os.Signal
	sigsSet chan struct{}
	sigOnce sync.Once
	kernel  string
	warmDir string // not made: corral exec makes it
	wd      string // the host's current directory
}

func newExecHarness(t *testing.T) *execHarness {
	ctx, cancel := context.WithCancel(context.Background())
	g := &fakeGuest{srv: agent.NewServer(agent.Config{}), ctx: ctx, cancel: cancel}
	t.Cleanup(func() { cancel(); g.wg.Wait() })
	h := &execHarness{t: t, env: map[string]string{}, guest: g, sigsSet: make(chan struct{}),
		kernel:  testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047}),
		warmDir: filepath.Join(t.TempDir(), "cache", "corral", "warm"), wd: "/"}
	h.startFn = func(ctx context.Context, cfg agentvm.Config) (guestVM, error) {
		g.cfg = cfg
		fmt.Fprintln(cfg.Machine.Console, "fake boot")
		return g, nil
	}
	return h
}

func (h *execHarness) deps() execDeps {
	return execDeps{
		lookupEnv: func(k string) (string, bool) { v, ok := h.env[k]; return v, ok },
		getwd:     func() (string, error) { return h.wd, nil },
		agent:     func(func(string) (string, bool)) (string, error) { return "/fake/agent", nil },
		kernel: func(k string, lookup func(string) (string, bool)) (string, string, error) {
			return h.kernel, "console=ttyS0 panic=-1", nil
		},
		start: func(ctx context.Context, cfg agentvm.Config, warm *agentvm.Warm) (guestVM, error) {
			h.warm = warm
			return h.startFn(ctx, cfg)
		},
		warmDir: func() (string, error) { return h.warmDir, nil },
		signals: func(c chan<- os.Signal) func() {
			h.sigOnce.Do(func() {
				h.sigs = c
				close(h.sigsSet)
			})
			return func() {}
		},
	}
}

func (h *execHarness) run(stdin io.Reader, stdout io.Writer, args ...string) (int, string) {
	h.t.Helper()
	var errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	code := execMain(context.Background(), args, stdin, stdout, &errb, h.deps())
	const kept = "corral: the guest console is in "
	if i := strings.Index(errb.String(), kept); i >= 0 {
		p := strings.SplitN(errb.String()[i+len(kept):], "\n", 2)[0]
		h.t.Cleanup(func() { os.Remove(p) })
	}
	return code, errb.String()
}

func TestExecFakeOutputAndStatus(t *testing.T) {
	h := newExecHarness(t)
	h.env[envCmdline] = "nokaslr"
	var out bytes.Buffer
	code, stderr := h.run(nil, &out, "--cmdline", "loglevel=3", "-e", "X=y", "--", "sh", "-c", `echo out; echo err >&2; echo "$X $PWD"; exit 3`)
	if code != 3 || out.String() != "out\ny /\n" || stderr != "err\n" {
		t.Errorf("status %d, stdout %q, stderr %q; want 3, \"out\\ny /\\n\", \"err\\n\"", code, out.String(), stderr)
	}
	c := h.guest.cfg
	if c.Machine.Cmdline != "console=ttyS0 panic=-1 quiet nokaslr loglevel=3" || c.Machine.Kernel != h.kernel || c.Agent != "/fake/agent" || c.Root != agentvm.RootHost() {
		t.Errorf("agentvm config: cmdline %q kernel %q agent %q root %v", c.Machine.Cmdline, c.Machine.Kernel, c.Agent, c.Root)
	}
	if !h.guest.closed || h.guest.killed {
		t.Errorf("closed=%v killed=%v, want the VM closed (powered off), not killed", h.guest.closed, h.guest.killed)
	}
	// The temporary console log is gone after a run corral did not fail.
	f, _ := c.Machine.Console.(*os.File)
	if f == nil {
		t.Fatalf("console is %T, want the log file", c.Machine.Console)
	}
	if _, err := os.Stat(f.Name()); !os.IsNotExist(err) {
		t.Errorf("console log %s left behind: %v", f.Name(), err)
	}
}

func TestExecFakeBinaryStdin(t *testing.T) {
	h := newExecHarness(t)
	data := make([]byte, 4<<20)
	rand.Read(data)
	var out bytes.Buffer
	code, stderr := h.run(bytes.NewReader(data), &out, "-i", "--", "cat")
	if code != 0 || !bytes.Equal(out.Bytes(), data) || stderr != "" {
		t.Errorf("status %d, %d bytes back (equal %v), stderr %q", code, out.Len(), bytes.Equal(out.Bytes(), data), stderr)
	}
	// Without -i the command's stdin is empty.
	out.Reset()
	h = newExecHarness(t)
	code, _ = h.run(bytes.NewReader(data), &out, "--", "wc", "-c")
	if code != 0 || strings.TrimSpace(out.String()) != "0" {
		t.Errorf("without -i: status %d, wc -c says %q", code, out.String())
	}
}

func TestExecFakeStatuses(t *testing.T) {
	for _, tc := range []struct {
		argv   []string
		status int
		stderr string
	}{
		{[]string{"true"}, 0, ""},
		{[]string{"sh", "-c", "kill -TERM $$"}, 128 + int(syscall.SIGTERM), ""},
		{[]string{"corral-no-such-command"}, exitNotFound, "executable file not found"},
		{[]string{"/no/such/path"}, exitNotFound, "no such file"},
		{[]string{"/dev/null"}, exitVMMFailure, "permission denied"},
	} {
		h := newExecHarness(t)
		code, stderr := h.run(nil, io.Discard, append([]string{"--"}, tc.argv...)...)
		if code != tc.status || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("%q: status %d, stderr %q; want %d mentioning %q", tc.argv, code, stderr, tc.status, tc.stderr)
		}
	}
}

func TestExecFakeTimeout(t *testing.T) {
	h := newExecHarness(t)
	t0 := time.Now()
	code, stderr := h.run(nil, io.Discard, "--timeout", "300ms", "--", "sleep", "30")
	if code != exitTimeout || !strings.Contains(stderr, "corral: timeout") || time.Since(t0) > 10*time.Second {
		t.Errorf("status %d after %v, stderr %q; want 124 at once", code, time.Since(t0), stderr)
	}
	if !h.guest.killed {
		t.Error("the VM was not killed")
	}
	// The console log is kept and named, as corral failed.
	path := consolePathFrom(t, stderr)
	if _, err := os.Stat(path); err != nil {
		t.Errorf("console log not kept: %v", err)
	}
	os.Remove(path)
}

func consolePathFrom(t *testing.T, stderr string) string {
	t.Helper()
	const p = "corral: the guest console is in "
	i := strings.Index(stderr, p)
	if i < 0 {
		t.Fatalf("stderr names no console log: %q", stderr)
	}
	return strings.TrimSpace(strings.SplitN(stderr[i+len(p):], "\n", 2)[0])
}

// readyWriter closes ready when the output contains "ready".
type readyWriter struct {
	mu    sync.Mutex
	b     bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Write(p)
	if strings.Contains(w.b.String(), "ready") {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

func TestExecFakeSignalForwarded(t *testing.T) {
	h := newExecHarness(t)
	w := &readyWriter{ready: make(chan struct{})}
	go func() {
		<-h.sigsSet
		<-w.ready
		h.sigs <- syscall.SIGINT
	}()
	code, stderr := h.run(nil, w, "--", "sh", "-c", `trap 'echo got; exit 7' INT; echo ready; while :; do sleep 0.05; done`)
	if code != 7 || !strings.Contains(w.b.String(), "got") || strings.Contains(stderr, "stopped") {
		t.Errorf("status %d, stdout %q, stderr %q; want the command to get SIGINT and exit 7", code, w.b.String(), stderr)
	}
}

func TestExecFakeSecondSignalStops(t *testing.T) {
	h := newExecHarness(t)
	w := &readyWriter{ready: make(chan struct{})}
	go func() {
		<-h.sigsSet
		<-w.ready
		h.sigs <- syscall.SIGTERM
		time.Sleep(100 * time.Millisecond)
		h.sigs <- syscall.SIGTERM
	}()
	t0 := time.Now()
	code, stderr := h.run(nil, w, "--", "sh", "-c", `trap '' TERM; echo ready; sleep 30`)
	if code != 128+int(syscall.SIGTERM) || !h.guest.killed || time.Since(t0) > execSignalGrace {
		t.Errorf("status %d after %v, killed %v, stderr %q; want 143 at the second signal", code, time.Since(t0), h.guest.killed, stderr)
	}
}

func TestExecFakeAgentNeverCameUp(t *testing.T) {
	h := newExecHarness(t)
	h.startFn = func(ctx context.Context, cfg agentvm.Config) (guestVM, error) {
		fmt.Fprintln(cfg.Machine.Console, "booting")
		return nil, &agentvm.AgentError{Reason: agentvm.ReasonExited, Exit: corral.Exit{Reason: corral.ExitPowerOff},
			AgentErrors: []string{"vsock: no such device"}, Console: []string{"booting", "corral-agent: error: vsock: no such device"}}
	}
	code, stderr := h.run(nil, io.Discard, "--", "true")
	for _, want := range []string{"corral: agentvm: the guest agent never answered: the machine ended first (power-off); the agent said: vsock: no such device",
		"  | corral-agent: error: vsock: no such device\n"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if code != exitVMMFailure {
		t.Errorf("status %d, want 126", code)
	}
	path := consolePathFrom(t, stderr)
	if b, err := os.ReadFile(path); err != nil || string(b) != "booting\n" {
		t.Errorf("kept console log %s: %q, %v", path, b, err)
	}
	os.Remove(path)
}

func TestExecFakeConfigErrorAndConsoleFlag(t *testing.T) {
	h := newExecHarness(t)
	h.startFn = func(ctx context.Context, cfg agentvm.Config) (guestVM, error) {
		return nil, fmt.Errorf("agentvm: %w: no kernel given", corral.ErrConfig)
	}
	log := filepath.Join(t.TempDir(), "console.log")
	code, stderr := h.run(nil, io.Discard, "--console", log, "--", "true")
	if code != exitUsage || !strings.Contains(stderr, "no kernel given") {
		t.Errorf("status %d, stderr %q; want 125", code, stderr)
	}
	if _, err := os.Stat(log); err != nil {
		t.Errorf("--console file: %v", err)
	}
	// A --console file is the user's: kept after success too.
	h = newExecHarness(t)
	if code, _ := h.run(nil, io.Discard, "--console", log, "--", "true"); code != 0 {
		t.Fatalf("status %d", code)
	}
	if _, err := os.Stat(log); err != nil {
		t.Errorf("--console file after success: %v", err)
	}
}

func TestExecFakeNoVMNoLog(t *testing.T) {
	h := newExecHarness(t)
	h.startFn = func(ctx context.Context, cfg agentvm.Config) (guestVM, error) {
		return nil, errors.New("agentvm: kvm: /dev/kvm is not available")
	}
	logsBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "corral-exec-*.log"))
	code, stderr := h.run(nil, io.Discard, "--", "true")
	if code != exitVMMFailure || strings.Contains(stderr, "guest console is in") {
		t.Errorf("status %d, stderr %q; want 126 and no console log kept (nothing ran)", code, stderr)
	}
	logsAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "corral-exec-*.log"))
	if len(logsAfter) > len(logsBefore) {
		t.Errorf("empty console log left behind: %q", logsAfter)
	}
}

// TestExecFakeWarmByDefault: corral exec asks for a warm start in the
// cache directory, with corral's version, unless --cold.
func TestExecFakeWarmByDefault(t *testing.T) {
	h := newExecHarness(t)
	if code, stderr := h.run(nil, io.Discard, "true"); code != 0 {
		t.Fatalf("status %d: %s", code, stderr)
	}
	if h.warm == nil || h.warm.Dir != h.warmDir || h.warm.Version != version {
		t.Errorf("warm %+v, want the cache directory and version %q", h.warm, version)
	}
	// It exists before the machine starts: the sandbox's Landlock rule for
	// it needs it, also for a machine that then boots cold (a NIC).
	if fi, err := os.Stat(h.warmDir); err != nil || !fi.IsDir() {
		t.Errorf("cache directory not made: %v", err)
	}
	h = newExecHarness(t)
	if code, stderr := h.run(nil, io.Discard, "--cold", "true"); code != 0 {
		t.Fatalf("--cold: status %d: %s", code, stderr)
	}
	if h.warm != nil {
		t.Errorf("--cold started warm: %+v", h.warm)
	}
}
