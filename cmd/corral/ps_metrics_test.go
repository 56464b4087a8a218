package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/inventory"
)

// metricsTarget is a running VM's control socket that serves counters.
type metricsTarget struct{ stopTarget }

func (*metricsTarget) Metrics() []control.Metric {
	return []control.Metric{{Name: "corral_vcpu_exits_total", Type: control.Counter,
		Samples: []control.Sample{{Labels: map[string]string{"reason": "io"}, Value: 7}}}}
}

// serveControl serves tgt on the control socket of the VM registered as e.
func serveControl(t *testing.T, e *inventory.Entry, tgt control.Target) {
	t.Helper()
	s, err := control.Listen(filepath.Join(e.Dir(), control.SocketName), control.Config{Target: tgt, Owner: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(time.Second) })
}

// staleSocket leaves a socket file at the VM's control socket with nothing
// listening on it, as a VMM that was killed leaves it.
func staleSocket(t *testing.T, dir string) {
	t.Helper()
	ln, err := net.Listen("unix", filepath.Join(dir, control.SocketName))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
}

// TestPsMetrics: ps --json --metrics has each running VM's counters from
// its control socket; a VM whose VMM does not answer gets metrics_error
// and does not stop the listing; ended VMs have none.
func TestPsMetrics(t *testing.T) {
	sd, _ := fakeInventory(t)
	web := fakeVM(t, sd, idWeb, "web", nil, inventory.Running)
	serveControl(t, web, &metricsTarget{})
	stale := fakeVM(t, sd, idDB, "pg", nil, inventory.Running)
	staleSocket(t, stale.Dir())
	fakeVM(t, sd, idOld, "old", nil, inventory.Ended)

	start := time.Now()
	vms := psJSON(t, "-a", "--metrics")
	if d := time.Since(start); d > 2*metricsTimeout {
		t.Errorf("ps --metrics took %v", d)
	}
	byName := map[string]vmJSON{}
	for _, v := range vms {
		byName[v.Name] = v
	}
	if len(vms) != 3 {
		t.Fatalf("ps -a --metrics listed %d VMs, want 3", len(vms))
	}
	w := byName["web"]
	if w.MetricsError != "" || len(w.Metrics) != 1 || w.Metrics[0].Name != "corral_vcpu_exits_total" ||
		len(w.Metrics[0].Samples) != 1 || w.Metrics[0].Samples[0].Value != 7 || w.Metrics[0].Samples[0].Labels["reason"] != "io" {
		t.Errorf("web's metrics: %+v (error %q)", w.Metrics, w.MetricsError)
	}
	if p := byName["pg"]; p.Metrics != nil || !strings.Contains(p.MetricsError, "no VMM is listening") {
		t.Errorf("pg (stale socket): metrics %+v, error %q", p.Metrics, p.MetricsError)
	}
	if o := byName["old"]; o.Metrics != nil || o.MetricsError != "" {
		t.Errorf("ended VM: metrics %+v, error %q", o.Metrics, o.MetricsError)
	}
	// Without --metrics nothing is asked.
	for _, v := range psJSON(t) {
		if v.Metrics != nil || v.MetricsError != "" {
			t.Errorf("ps --json without --metrics: %+v", v)
		}
	}
	if code, _, stderr := runCLI(t, "ps", "--metrics"); code != exitUsage || !strings.Contains(stderr, "--metrics needs --json") {
		t.Errorf("ps --metrics without --json: %d %q", code, stderr)
	}
}

// TestStaleSocketCLI: a running VM (lock held) whose control socket file
// is left with nothing listening: stop and kill say its VMM does not
// answer, naming the socket; ps still lists it.
func TestStaleSocketCLI(t *testing.T) {
	sd, _ := fakeInventory(t)
	e := fakeVM(t, sd, idWeb, "web", nil, inventory.Running)
	staleSocket(t, e.Dir())
	sock := filepath.Join(e.Dir(), control.SocketName)
	if fi, err := os.Lstat(sock); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("no stale socket: %v", err)
	}
	for _, cmd := range []string{"stop", "kill"} {
		code, _, stderr := runCLI(t, cmd, "web")
		if code != exitNotStopped || !strings.Contains(stderr, "does not answer on its control socket") || !strings.Contains(stderr, sock) {
			t.Errorf("corral %s of a VM with a stale socket: %d %q", cmd, code, stderr)
		}
	}
	if vms := psJSON(t); len(vms) != 1 || vms[0].State != inventory.Running {
		t.Errorf("ps with a stale socket: %+v", vms)
	}
}
