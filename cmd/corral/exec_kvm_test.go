package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/testenv"
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
		t.Skipf("needs a Linux kernel with vsock and 9p: set $%s or build the test kernel: %v", envKernel, err)
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

// execVM runs corral exec in process with env added to the host's.
func execVM(t *testing.T, env map[string]string, stdin io.Reader, args ...string) (int, []byte, string) {
	t.Helper()
	d := hostExecDeps()
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
	code, out, stderr := execVM(t, env, nil, "--share", rw+":/mnt/rw", "--share", ro+":/mnt/ro,ro", "--",
		"sh", "-c", "cat /mnt/ro/in; echo written > /mnt/rw/out && if echo x > /mnt/ro/bad; then echo ro-writable; fi")
	if code != 0 || string(out) != "from the host\n" || !strings.Contains(stderr, "Read-only file system") {
		t.Errorf("status %d, stdout %q, stderr %q; want the ro file read and the ro write refused (EROFS)", code, out, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(rw, "out")); err != nil || string(b) != "written\n" {
		t.Errorf("file written in the rw share: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(ro, "bad")); !os.IsNotExist(err) {
		t.Errorf("the ro share took a write: %v", err)
	}
}

func TestExecVMTimeoutLeavesNothing(t *testing.T) {
	env := execE2E(t)
	fdsBefore := countFDs(t)
	logsBefore, _ := filepath.Glob(filepath.Join(os.TempDir(), "corral-exec-*.log"))
	code, _, stderr := execVM(t, env, nil, "--timeout", "20s", "--", "sleep", "600")
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
