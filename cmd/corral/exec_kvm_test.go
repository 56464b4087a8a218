package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/sandbox"
)

// End-to-end tests of corral exec: a real VM with the test kernel (from
// $CORRAL_KERNEL, else the cache of tests/linux/build-kernel.sh) and the
// agent from $CORRAL_AGENT, else this test binary when it is static, else
// a corral-agent built with initrd.BuildAgent. They run corral exec in
// process (execMain with the host's dependencies), so they need no corral
// binary and run under tests/tcgkvm.

// execE2E returns the environment corral exec should see, or skips.
func execE2E(t *testing.T) map[string]string {
	t.Helper()
	testenv.MustHaveKVM(t)
	env := map[string]string{}
	if k := os.Getenv(envKernel); k != "" {
		env[envKernel] = k
	} else if _, _, err := execKernel("", func(string) (string, bool) { return "", false }); err != nil {
		testenv.Missing(t, testenv.Kernel, "needs a Linux kernel with vsock and 9p: set $%s or build the test kernel: %v", envKernel, err)
	}
	agentPath := os.Getenv(agentvm.AgentEnv)
	if agentPath == "" {
		if self, err := os.Executable(); err == nil {
			if b, err := os.ReadFile(self); err == nil && initrd.CheckAgent(b) == nil {
				agentPath = self // TestMain makes this binary the agent as PID 1
			}
		}
	}
	if agentPath == "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		p, err := initrd.BuildAgent(ctx, t.TempDir())
		if err != nil {
			t.Skipf("needs a static agent: set $%s, or build this test with CGO_ENABLED=0: %v", agentvm.AgentEnv, err)
		}
		agentPath = p
	}
	env[agentvm.AgentEnv] = agentPath
	return env
}

// execVM runs corral exec --cold in process with env added to the
// host's (TestExecVMWarm tests the warm path).
func execVM(t *testing.T, env map[string]string, stdin io.Reader, args ...string) (int, []byte, string) {
	t.Helper()
	return execVMIn(t, "", env, stdin, append([]string{"--cold"}, args...)...)
}

// execVMIn runs corral exec in process with env added to the host's and
// warmDir as the warm cache.
func execVMIn(t *testing.T, warmDir string, env map[string]string, stdin io.Reader, args ...string) (int, []byte, string) {
	t.Helper()
	d := hostExecDeps()
	// The command starts in / wherever the tree is: a clone under /tmp
	// (mktemp -d) is not in a guest, which mounts its own /tmp.
	d.getwd = func() (string, error) { return "/", nil }
	if warmDir != "" {
		d.warmDir = func() (string, error) { return warmDir, nil }
	}
	d.lookupEnv = func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		return os.LookupEnv(k)
	}
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	var out, errb bytes.Buffer
	t0 := time.Now()
	code := execMain(context.Background(), append([]string{"--agent-timeout", "5m"}, args...), stdin, &out, &errb, d)
	t.Logf("corral exec %q: status %d in %v", args, code, time.Since(t0).Round(time.Millisecond))
	const kept = "corral: the guest console is in "
	if i := strings.Index(errb.String(), kept); i >= 0 {
		p := strings.SplitN(errb.String()[i+len(kept):], "\n", 2)[0]
		if b, err := os.ReadFile(p); err == nil {
			t.Logf("guest console (%s):\n%s", p, b)
		}
		os.Remove(p)
	}
	return code, out.Bytes(), errb.String()
}

func TestExecVMOutputAndStatus(t *testing.T) {
	env := execE2E(t)
	code, out, stderr := execVM(t, env, nil, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
	if code != 3 || string(out) != "out\n" || stderr != "err\n" {
		t.Errorf("status %d, stdout %q, stderr %q; want 3, \"out\\n\", \"err\\n\"", code, out, stderr)
	}
}

func TestExecVMBinaryThroughCat(t *testing.T) {
	env := execE2E(t)
	data := make([]byte, 16<<20)
	rand.Read(data)
	code, out, stderr := execVM(t, env, bytes.NewReader(data), "-i", "--", "cat")
	if code != 0 || !bytes.Equal(out, data) {
		t.Errorf("status %d, %d of %d bytes back, identical %v; stderr %q", code, len(out), len(data), bytes.Equal(out, data), stderr)
	}
}

func TestExecVMShares(t *testing.T) {
	env := execE2E(t)
	rw, ro := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(ro, "in"), []byte("from the host\n"), 0o644)
	// The guest booted on a kernel root: the kernel mounted the host's /
	// over 9p and ran the agent from its host path (no initramfs).
	agentPath, err := filepath.EvalSymlinks(env[agentvm.AgentEnv])
	if err != nil {
		t.Fatal(err)
	}
	code, out, stderr := execVM(t, env, nil, "--share", rw+":/mnt/rw", "--share", ro+":/mnt/ro,ro", "--",
		"sh", "-c", "cat /mnt/ro/in; echo written > /mnt/rw/out && if echo x > /mnt/ro/bad; then echo ro-writable; fi; tr ' ' '\\n' </proc/cmdline | grep -E '^(rootfstype|init)='")
	want := "from the host\nrootfstype=9p\ninit=" + agentPath + "\n"
	if code != 0 || string(out) != want || !strings.Contains(stderr, "Read-only file system") {
		t.Errorf("status %d, stdout %q, stderr %q; want %q and the ro write refused (EROFS)", code, out, stderr, want)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("file written in the rw share: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "bad")); !os.IsNotExist(err) {
		t.Errorf("the ro share took a write: %v", err)
	}
}

// --timeout ends a sleeping command with 124, and nothing is left: no
// descriptor, no console log, no TAP (the VM has a NIC, --net auto, in a
// network namespace of the test's own). corral exec runs in this process
// and starts none, so its return leaves no process behind either.
func TestExecVMTimeoutLeavesNothing(t *testing.T) {
	env := execE2E(t)
	netnstest.Run(t, func() {
		fdsBefore := countFDs(t)
		logsBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "corral-exec-*.log"))
		code, _, stderr := execVM(t, env, nil, "--timeout", "20s", "--net", "auto", "--", "sleep", "600")
		if code != exitTimeout || !strings.Contains(stderr, "corral: timeout") {
			t.Errorf("status %d, stderr %q; want 124", code, stderr)
		}
		if n := countFDs(t); n > fdsBefore {
			t.Errorf("%d descriptors open after, %d before", n, fdsBefore)
		}
		logsAfter, _ := filepath.Glob(filepath.Join(os.TempDir(), "corral-exec-*.log"))
		if len(logsAfter) > len(logsBefore) {
			t.Errorf("console logs left behind: %q (before: %q)", logsAfter, logsBefore)
		}
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				t.Errorf("link %s (%s) left in the namespace", l.Attrs().Name, l.Type())
			}
		}
	})
}

func TestExecVMKernelWithoutVsock(t *testing.T) {
	env := execE2E(t)
	// The test kernel with its virtio-vsock driver's initcall left out:
	// AF_VSOCK without a transport, as a kernel without
	// CONFIG_VIRTIO_VSOCKETS has.
	t0 := time.Now()
	code, _, stderr := execVM(t, env, nil, "--cmdline", "initcall_blacklist=virtio_vsock_init", "--", "true")
	if code != exitVMMFailure || !strings.Contains(stderr, "CONFIG_VIRTIO_VSOCKETS") || !strings.Contains(stderr, "never answered") {
		t.Errorf("status %d, stderr %q; want 126 naming CONFIG_VIRTIO_VSOCKETS", code, stderr)
	}
	if strings.Contains(stderr, "no answer within") {
		t.Errorf("waited for the timeout (%v) instead of hearing the agent give up", time.Since(t0))
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// corral exec confined as it is by default outside tests (here forced with
// --seccomp=on: the system-call filter, Landlock and no capabilities), in a
// process of its own: the command runs from the host's root over 9p,
// writes a read-write share, reads its stdin and gets its exact streams
// and status back; while it waits on stdin every thread of the VMM shows
// Seccomp 2 (filtering) and NoNewPrivs 1; the temporary console log, in
// the state directory once confined, is removed.
func TestExecVMSandboxed(t *testing.T) {
	env := execE2E(t)
	rw := t.TempDir()
	// Two vCPUs and a NIC: a multi-queue TAP, whose queues the device
	// attaches and detaches (TUNSETQUEUE) once the guest's driver is up,
	// under the filter.
	netnstest.Run(t, func() {
		cmd := sandboxedCorral(t, "exec", "--seccomp=on", "-i", "--cpus", "2", "--net", "auto", "--share", rw+":/mnt/rw", "--",
			"sh", "-c", "ls / >/dev/null && echo out; echo err >&2; read x; echo $x > /mnt/rw/out; exit 3")
		for k, v := range env {
			cmd.Env = append(cmd.Env, k+"="+v)
		}
		cmd.Env = append(cmd.Env, "XDG_CACHE_HOME="+t.TempDir()) // warm: its snapshot, not the user's
		state := ""
		for _, e := range cmd.Env {
			if v, ok := strings.CutPrefix(e, "CORRAL_STATE_DIR="); ok {
				state = v
			}
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var errb bytes.Buffer
		cmd.Stderr = &errb
		t0 := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		first := make([]byte, 4)
		if _, err := io.ReadFull(stdout, first); err != nil || string(first) != "out\n" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("first stdout bytes %q (%v); stderr:\n%s", first, err, errb.String())
		}
		t.Logf("the command ran %v after corral exec started", time.Since(t0).Round(time.Millisecond))
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", cmd.Process.Pid))
		if err != nil || len(tasks) < 2 {
			t.Errorf("%d threads (%v)", len(tasks), err)
		}
		wants := []string{"Seccomp:\t2\n", "NoNewPrivs:\t1\n"}
		if sandbox.AllThreadsSupported() {
			wants = append(wants, "CapEff:\t0000000000000000\n")
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
		io.WriteString(stdin, "written\n")
		stdin.Close()
		rest, _ := io.ReadAll(stdout)
		err = cmd.Wait()
		if got := exitOf(err); got != 3 || len(rest) != 0 || errb.String() != "err\n" {
			t.Errorf("exit %d (%v), more stdout %q, stderr %q; want 3, nothing more, \"err\\n\"", got, err, rest, errb.String())
		}
		if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
			t.Errorf("file written in the rw share: %q, %v", b, err)
		}
		if logs, _ := filepath.Glob(filepath.Join(state, "corral-exec-*.log")); len(logs) > 0 {
			t.Errorf("console logs left behind: %q", logs)
		}

	})
}

// TestExecVMWarm: the first corral exec boots and builds the warm
// snapshot, the second restores it (the log says which) and gives the
// same output and status; a share changed in between shows its new
// content (shares are mounted after the restore). A third exec restores
// in a confined child (--seccomp=on, Landlock), reading the cache.
func TestExecVMWarm(t *testing.T) {
	env := execE2E(t)
	cacheHome := t.TempDir()
	warmDir := filepath.Join(cacheHome, "corral", "warm")
	share := t.TempDir()
	os.WriteFile(filepath.Join(share, "f"), []byte("first\n"), 0o644)
	args := []string{"--log", "info", "--share", share + ":/mnt/s,ro", "--", "sh", "-c", "cat /mnt/s/f; echo err >&2; exit 3"}
	// Only the command's stderr, without the VMM's log lines.
	cmdErr := func(stderr string) string {
		var keep []string
		for _, l := range strings.SplitAfter(stderr, "\n") {
			if !strings.HasPrefix(l, "time=") && l != "" {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "")
	}
	code, out, stderr := execVMIn(t, warmDir, env, nil, args...)
	if code != 3 || string(out) != "first\n" || cmdErr(stderr) != "err\n" {
		t.Fatalf("first exec: status %d, stdout %q, stderr %q; want 3, \"first\\n\", \"err\\n\"", code, out, stderr)
	}
	if i := strings.Index(stderr, "cannot be snapshotted"); i >= 0 {
		// The exec ran, cold: a device of this VMM cannot be paused or
		// saved yet (virtio-9p, while issue 13 is under way).
		line, _, _ := strings.Cut(stderr[i:], "\n")
		t.Skipf("warm exec fell back to a cold boot (output and status right): %s", line)
	}
	if !strings.Contains(stderr, "warm: built "+warmDir+"/") || strings.Contains(stderr, "warm: restored") {
		t.Errorf("first exec did not build the snapshot:\n%s", stderr)
	}
	os.WriteFile(filepath.Join(share, "f"), []byte("second\n"), 0o644)
	t0 := time.Now()
	code, out, stderr = execVMIn(t, warmDir, env, nil, args...)
	t.Logf("warm exec took %v", time.Since(t0))
	if code != 3 || string(out) != "second\n" || cmdErr(stderr) != "err\n" {
		t.Errorf("second exec: status %d, stdout %q, stderr %q; want 3, \"second\\n\", \"err\\n\"", code, out, stderr)
	}
	if !strings.Contains(stderr, "warm: restored "+warmDir+"/") || strings.Contains(stderr, "warm: built") {
		t.Errorf("second exec did not restore:\n%s", stderr)
	}

	cmd := sandboxedCorral(t, append([]string{"exec", "--seccomp=on"}, args...)...)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "XDG_CACHE_HOME="+cacheHome)
	var outb, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &errb
	err := cmd.Run()
	if got := exitOf(err); got != 3 || outb.String() != "second\n" || cmdErr(errb.String()) != "err\n" || !strings.Contains(errb.String(), "warm: restored") {
		t.Errorf("confined warm exec: exit %d (%v), stdout %q, stderr:\n%s", got, err, outb.String(), errb.String())
	}
}
