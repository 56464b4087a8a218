package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/syncbuf"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

var cliCountLine = regexp.MustCompile(`(?m)^count (\d+) mem ok\r?$`)

func lastCount(s string) uint64 {
	m := cliCountLine.FindAllStringSubmatch(s, -1)
	if len(m) == 0 {
		return 0
	}
	v, _ := strconv.ParseUint(m[len(m)-1][1], 10, 64)
	return v
}

// TestSnapshotRestoreCLI is issue 13 through the CLI with the sandbox on
// (seccomp and Landlock, issue 16): a confined corral run takes a snapshot
// through corral snapshot --resume and runs on; a confined corral run
// --restore goes on from the saved count; the inventory and the audit
// trail name the snapshot.
func TestSnapshotRestoreCLI(t *testing.T) {
	testenv.MustHaveKVM(t)
	const step = 1 << 22
	const limit = 30 * step
	state := t.TempDir()
	t.Setenv("CORRAL_STATE_DIR", state)
	t.Setenv("CORRAL_AUDIT_LOG", filepath.Join(state, "audit", "audit.jsonl"))
	snapDir := filepath.Join(t.TempDir(), "snaps")
	k := guests.BuildT(t, "count")
	src := sandboxedCorralIn(t, state, "run", "--name", "snapsrc", "--snapshot-dir", snapDir, "--seccomp=on", "--log=info",
		"--kernel", k, "--cmdline", fmt.Sprintf("step=%d limit=%d", step, limit))
	srcOut, srcErr := new(syncbuf.Buffer), new(syncbuf.Buffer)
	src.Stdout, src.Stderr = srcOut, srcErr
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	srcDone := make(chan struct{})
	var srcErr2 error
	go func() { srcErr2 = src.Wait(); close(srcDone) }()
	t.Cleanup(func() {
		src.Process.Kill()
		<-srcDone
	})
	deadline := time.Now().Add(bootWait)
	for lastCount(srcOut.String()) < 2*step {
		if time.Now().After(deadline) {
			t.Fatalf("no count lines from the source within %v:\nstdout:\n%s\nstderr:\n%s", bootWait, srcOut, srcErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// corral pause stops the count; corral resume lets it go on.
	if code, out, errs := runCLI(t, "pause", "snapsrc"); code != exitOK || !strings.Contains(out, "paused") {
		t.Fatalf("corral pause: status %d: %s %s", code, out, errs)
	}
	time.Sleep(300 * time.Millisecond) // output the guest wrote before the pause reaches us
	held := lastCount(srcOut.String())
	time.Sleep(time.Second)
	if now := lastCount(srcOut.String()); now != held {
		t.Errorf("the paused guest counted on: %d after %d", now, held)
	}
	if code, out, errs := runCLI(t, "resume", "snapsrc"); code != exitOK || !strings.Contains(out, "running") {
		t.Fatalf("corral resume: status %d: %s %s", code, out, errs)
	}
	deadline = time.Now().Add(bootWait)
	for lastCount(srcOut.String()) <= held {
		if time.Now().After(deadline) {
			t.Fatalf("no count after corral resume:\n%s", srcOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	dir := filepath.Join(snapDir, "s1")
	code, out, errs := runCLI(t, "snapshot", "--resume", "snapsrc", dir)
	if code != exitOK || !strings.Contains(out, "running: snapshot in "+dir) {
		t.Fatalf("corral snapshot: status %d\nstdout: %s\nstderr: %s\nsource stderr:\n%s", code, out, errs, srcErr)
	}
	// Outside --snapshot-dir the confined VMM cannot write.
	if code, _, errs := runCLI(t, "snapshot", "--resume", "snapsrc", filepath.Join(t.TempDir(), "s2")); code == exitOK {
		t.Errorf("a snapshot outside --snapshot-dir succeeded in a confined VMM")
	} else if !strings.Contains(errs, "permission denied") {
		t.Errorf("a snapshot outside --snapshot-dir: %s", errs)
	}
	select {
	case <-srcDone:
		if err := srcErr2; exitOf(err) != 0 || strings.Contains(srcErr.String(), "forbidden system call") {
			t.Fatalf("source: %v\nstderr:\n%s", srcErr2, srcErr)
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("the source did not reach its limit:\n%s", srcOut)
	}
	if !strings.Contains(srcOut.String(), fmt.Sprintf("count: done %d", limit)) {
		t.Errorf("source output:\n%s", srcOut)
	}

	rest := sandboxedCorralIn(t, state, "run", "--name", "restored", "--restore", dir, "--seccomp=on", "--log=info")
	var rout, rerr bytes.Buffer
	rest.Stdout, rest.Stderr = &rout, &rerr
	err := rest.Run()
	if exitOf(err) != 0 || strings.Contains(rerr.String(), "forbidden system call") {
		t.Fatalf("corral run --restore: %v\nstdout:\n%s\nstderr:\n%s", err, rout.String(), rerr.String())
	}
	first := cliCountLine.FindStringSubmatch(rout.String())
	if first == nil || !strings.Contains(rout.String(), fmt.Sprintf("count: done %d", limit)) {
		t.Fatalf("restored output:\n%s", rout.String())
	}
	if v, _ := strconv.ParseUint(first[1], 10, 64); v <= 2*step {
		t.Errorf("the restored guest's first count is %d: it started over instead of going on", v)
	}
	if !strings.Contains(rerr.String(), "vm.restored") {
		t.Errorf("no vm.restored log line:\n%s", rerr.String())
	}
	// Guest-describing flags are refused with --restore.
	if code, _, errs := runCLI(t, "run", "--restore", dir, "--kernel", k); code != exitUsage || !strings.Contains(errs, "--kernel") {
		t.Errorf("run --restore --kernel: status %d, %s", code, errs)
	}

	vms := psJSON(t, "-a", "--filter", "name=restored")
	if len(vms) != 1 {
		t.Fatalf("ps -a shows %d VMs named restored", len(vms))
	}
	if rec := vms[0].Record; rec == nil || rec.Snapshot != dir {
		t.Errorf("the restored VM's record is %+v, want one naming snapshot %q", rec, dir)
	}
	trail := filepath.Join(state, "audit", "audit.jsonl")
	if got := eventNames(vmEvents(t, trail, vms[0].ID)); !strings.Contains(got, "vm.restored") {
		t.Errorf("the restored VM's audit events are %s, want a vm.restored", got)
	}
	srcVMs := psJSON(t, "-a", "--filter", "name=snapsrc")
	if len(srcVMs) == 1 {
		if got := eventNames(vmEvents(t, trail, srcVMs[0].ID)); !strings.Contains(got, "vm.paused,vm.snapshot,vm.resumed") {
			t.Errorf("the source's audit events are %s, want vm.paused,vm.snapshot,vm.resumed", got)
		}
	} else {
		t.Errorf("ps -a shows %d VMs named snapsrc", len(srcVMs))
	}
}
