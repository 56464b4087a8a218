package task

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/ttrpc"

	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/inventory"
)

func TestMain(m *testing.M) {
	// manager.Start runs this binary again as the serving shim: that
	// child has nothing to do here.
	for _, a := range os.Args[1:] {
		if a == "-namespace" {
			os.Exit(0)
		}
	}
	os.Exit(m.Run())
}

// TestServedOverTTRPC drives the service through a ttrpc server and
// client, as containerd does: the shim library serves only a plugin with
// RegisterTTRPC.
func TestServedOverTTRPC(t *testing.T) {
	h := newHarness(t, testSpec)
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.RegisterTTRPC(srv); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	defer srv.Close()
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cl := ttrpc.NewClient(conn)
	defer cl.Close()
	tc := taskAPI.NewTaskClient(cl)
	ctx := context.Background()
	_, err = tc.State(ctx, &taskAPI.StateRequest{ID: "t1"})
	if !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Fatalf("State before Create: %v, want not found", err)
	}
	if _, err := tc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle}); err != nil {
		t.Fatal(err)
	}
	st, err := tc.State(ctx, &taskAPI.StateRequest{ID: "t1"})
	if err != nil || st.Status != task.Status_CREATED {
		t.Fatalf("State: %v %v", st, err)
	}
}

// TestManagerStartKeepsSocket: the address `start` prints must still be
// listening when containerd dials it.
func TestManagerStartKeepsSocket(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the shim socket lives in /run/containerd/s, root's")
	}
	dir := t.TempDir()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	ctx := namespaces.WithNamespace(context.Background(), "shimtest")
	addr, err := NewManager(RuntimeName).Start(ctx, "t-"+filepath.Base(dir), shim.StartOpts{Address: filepath.Join(dir, "containerd.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer shim.RemoveSocket(addr)
	if !shim.CanConnect(addr) {
		t.Errorf("nothing listens on %s after start", addr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "address")); err != nil || string(b) != addr {
		t.Errorf("address file %q %v, want %q", b, err, addr)
	}
}

// TestManagerStopCleansUp: `shim delete` after a shim died removes the
// task's ended VM from the inventory and reports it killed.
func TestManagerStopCleansUp(t *testing.T) {
	bundle, stateDir := t.TempDir(), t.TempDir()
	t.Setenv(inventory.StateDirEnv, stateDir)
	testManagerStop(t, bundle, stateDir)
}

// TestManagerStopOptionsStateDir: shim delete finds the VMs in the state
// directory the runtime options chose, which Create recorded in the
// bundle, not in the default one.
func TestManagerStopOptionsStateDir(t *testing.T) {
	bundle, stateDir := t.TempDir(), t.TempDir()
	t.Setenv(inventory.StateDirEnv, t.TempDir())
	if err := saveStateDir(bundle, stateDir); err != nil {
		t.Fatal(err)
	}
	testManagerStop(t, bundle, stateDir)
}

func testManagerStop(t *testing.T, bundle, stateDir string) {
	t.Setenv(audit.Env, filepath.Join(t.TempDir(), "audit.jsonl"))
	for i, task := range []string{"t1", "other"} {
		e, err := inventory.Register(stateDir, inventory.Record{ID: fmt.Sprintf("%016x", i+1), PID: os.Getpid(),
			Labels: map[string]string{LabelNamespace: "ns1", LabelID: task}})
		if err != nil {
			t.Fatal(err)
		}
		e.Close() // the VMM died with its shim
	}
	wd, _ := os.Getwd()
	if err := os.Chdir(bundle); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	st, err := NewManager(RuntimeName).Stop(namespaces.WithNamespace(context.Background(), "ns1"), "t1")
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitStatus != 137 {
		t.Errorf("exit status %d, want 137", st.ExitStatus)
	}
	vms, err := inventory.List(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].Record.Labels[LabelID] != "other" {
		t.Errorf("left %+v, want only the other task's VM", vms)
	}
}
