package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/inventory"
	"github.com/corral-vmm/corral/shim/internal/ctrdtest"
)

// ns is the containerd namespace of the ctr tests.
const ns = "corraltest"

// bootTimeout bounds one command that boots a guest: Linux boots in
// 10-20 s under tests/tcgkvm's TCG, in well under a second on KVM.
const bootTimeout = 3 * time.Minute

type env struct {
	d    *ctrdtest.Daemon
	shim string
}

// setup checks the test's needs and starts a private containerd that runs
// the shim, with the test image imported into the given namespaces.
func setup(t *testing.T, namespaces ...string) env {
	t.Helper()
	testenv.MustHaveKVM(t)
	testenv.MustHaveRoot(t)
	tools := ctrdtest.MustHaveContainerd(t)
	t.Logf("containerd %s (%s)", tools.Version, tools.Containerd)
	ctrdtest.MustHaveFile(t, ctrdtest.BusyboxPath)
	ctrdtest.MustHaveKernel(t)
	shim := ctrdtest.MustHaveShim(t)
	var extra []string
	// tests/tcgkvm's workarounds for Linux guests in its emulator.
	if c := os.Getenv("CORRAL_TCGKVM_CMDLINE"); c != "" && os.Getenv("CORRAL_CMDLINE") == "" {
		extra = append(extra, "CORRAL_CMDLINE="+c)
	}
	d := ctrdtest.Start(t, ctrdtest.Options{Tools: tools, ShimDir: filepath.Dir(shim), Env: extra})
	for _, n := range namespaces {
		d.ImportImage(t, n, ctrdtest.ImageRef)
	}
	return env{d: d, shim: shim}
}

// result is how a command ended.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (e env) ctr(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var so, se bytes.Buffer
	cmd := e.d.Ctr(ctx, ns, args...)
	cmd.Stdout, cmd.Stderr = &so, &se
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("ctr %s: still running after %v: stdout %q stderr %q", strings.Join(args, " "), timeout, r.stdout, r.stderr)
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("ctr %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// TestCtrRunRm: the process's stdout and stderr come through containerd's
// FIFOs apart, and ctr exits with the process's own status.
func TestCtrRunRm(t *testing.T) {
	e := setup(t, ns)
	r := e.ctr(t, bootTimeout, "run", "--rm", "--runtime", ctrdtest.RuntimeType, ctrdtest.ImageRef, "t1",
		"sh", "-c", "echo out; echo err >&2; exit 7")
	t.Logf("ctr run --rm took %v", r.took)
	if r.code != 7 || r.stdout != "out\n" || !slices.Contains(strings.Split(r.stderr, "\n"), "err") {
		t.Fatalf("ctr run: exit %d, stdout %q, stderr %q; want 7, \"out\\n\", a line \"err\"", r.code, r.stdout, r.stderr)
	}
	e.noneLeft(t, "t1", nil)
}

// TestDetachedTask: a task started with ctr run -d is listed running, is
// listed paused between ctr task pause and resume, an exec in it returns
// its own status, and kill -s KILL then delete finish
// within 10 s leaving no shim, VM, mount, state directory, network
// interface or inventory entry.
func TestDetachedTask(t *testing.T) {
	e := setup(t, ns)
	ifs := interfaces(t)
	if r := e.ctr(t, bootTimeout, "run", "-d", "--runtime", ctrdtest.RuntimeType, ctrdtest.ImageRef, "t2"); r.code != 0 {
		t.Fatalf("ctr run -d: exit %d: %s", r.code, r.stderr)
	}
	t.Cleanup(func() {
		e.ctr(t, time.Minute, "task", "delete", "--force", "t2")
		e.ctr(t, time.Minute, "containers", "delete", "t2")
	})
	taskStatus := func(want string) {
		t.Helper()
		waitFor(t, time.Minute, "ctr task ls to show t2 "+want, func() (bool, string) {
			out := e.ctr(t, time.Minute, "task", "ls").stdout
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) == 3 && f[0] == "t2" && f[2] == want {
					return true, out
				}
			}
			return false, out
		})
	}
	taskStatus("RUNNING")
	// Pause freezes the VM; the task reads PAUSED until resumed.
	for _, step := range [][2]string{{"pause", "PAUSED"}, {"resume", "RUNNING"}} {
		if r := e.ctr(t, time.Minute, "task", step[0], "t2"); r.code != 0 {
			t.Fatalf("ctr task %s: exit %d (stderr %q)", step[0], r.code, r.stderr)
		}
		taskStatus(step[1])
	}
	vms := e.inventory(t, "t2")
	if len(vms) != 1 {
		t.Fatalf("inventory: %d machines labelled containerd.namespace=%s containerd.id=t2, want 1", len(vms), ns)
	}
	if pids := e.shims(t); len(pids) == 0 {
		t.Fatalf("no %s process serving this containerd", ctrdtest.ShimBinary)
	}
	if r := e.ctr(t, bootTimeout, "task", "exec", "--exec-id", "e1", "t2", "sh", "-c", "exit 3"); r.code != 3 {
		t.Fatalf("ctr task exec: exit %d, want 3 (stderr %q)", r.code, r.stderr)
	}
	start := time.Now()
	if r := e.ctr(t, 10*time.Second, "task", "kill", "-s", "KILL", "t2"); r.code != 0 {
		t.Fatalf("ctr task kill -s KILL: exit %d: %s", r.code, r.stderr)
	}
	for {
		r := e.ctr(t, 10*time.Second, "task", "delete", "t2")
		if r.code == 0 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("ctr task delete still failing 10 s after the kill: exit %d: %s", r.code, r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("kill -s KILL + delete took %v", took)
	if took > 10*time.Second {
		t.Errorf("kill -s KILL + delete took %v, want at most 10 s", took)
	}
	if r := e.ctr(t, time.Minute, "containers", "delete", "t2"); r.code != 0 {
		t.Errorf("ctr containers delete: exit %d: %s", r.code, r.stderr)
	}
	e.noneLeft(t, "t2", ifs)
}

// noneLeft waits up to 5 s for every trace of task id to go: shim
// processes, its runtime state directory, mounts under containerd's
// directory, inventory entries and (when before is not nil) network
// interfaces that were not there before.
func (e env) noneLeft(t *testing.T, id string, before []string) {
	t.Helper()
	task := filepath.Join(e.d.State, "io.containerd.runtime.v2.task", ns, id)
	waitFor(t, 5*time.Second, "nothing left of task "+id, func() (bool, string) {
		var left []string
		if pids := e.shims(t); len(pids) > 0 {
			left = append(left, fmt.Sprintf("shim processes %v", pids))
		}
		if _, err := os.Stat(task); !errors.Is(err, os.ErrNotExist) {
			left = append(left, "state directory "+task)
		}
		if ms, err := e.d.Mounts(); err != nil || len(ms) > 0 {
			left = append(left, fmt.Sprintf("mounts %v (%v)", ms, err))
		}
		if vms := e.inventory(t, id); len(vms) > 0 {
			left = append(left, fmt.Sprintf("inventory entries %v", vmIDs(vms)))
		}
		if before != nil {
			for _, n := range interfaces(t) {
				if !slices.Contains(before, n) {
					left = append(left, "network interface "+n)
				}
			}
		}
		return len(left) == 0, strings.Join(left, "; ")
	})
}

func (e env) shims(t *testing.T) []int {
	t.Helper()
	pids, err := e.d.ShimPIDs()
	if err != nil {
		t.Fatal(err)
	}
	return pids
}

// inventory returns the machines in the shims' inventory labelled with
// this namespace and id ("" for any id).
func (e env) inventory(t *testing.T, id string) []inventory.VM {
	t.Helper()
	all, err := inventory.List(e.d.StateDir)
	if err != nil {
		t.Fatalf("inventory: %v", err)
	}
	var out []inventory.VM
	for _, v := range all {
		if v.Record == nil {
			out = append(out, v) // a corrupt entry is a leftover too
			continue
		}
		if v.Record.Labels["containerd.namespace"] != "" && (id == "" || v.Record.Labels["containerd.id"] == id) {
			out = append(out, v)
		}
	}
	return out
}

func vmIDs(vms []inventory.VM) []string {
	var s []string
	for _, v := range vms {
		s = append(s, v.ID)
	}
	return s
}

func interfaces(t *testing.T) []string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	return names
}

// waitFor polls cond until it holds or timeout passes; then the test
// fails with cond's last word.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: %s", timeout, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
