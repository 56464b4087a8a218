package task

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	stats "github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	apitypes "github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/mount"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/fifo"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/inventory"
)

type harness struct {
	t        *testing.T
	svc      *Service
	vm       *fakeVM
	rec      *recorder
	bundle   string
	launched []LaunchRequest
	shutdown int
	mounts   []string // "mount TARGET" / "unmount TARGET"
	mu       sync.Mutex
}

const testSpec = `{"root":{"path":"rootfs"},"hostname":"box","process":{"args":["sh","-c","exit 7"],"env":["PATH=/bin"],"cwd":"/"}}`

func newHarness(t *testing.T, spec string) *harness {
	t.Helper()
	h := &harness{t: t, vm: newFakeVM(t), rec: newRecorder(), bundle: t.TempDir()}
	if err := os.WriteFile(filepath.Join(h.bundle, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	h.svc = NewService(context.Background(), Config{
		Namespace: "ns1",
		Publisher: h.rec,
		Launch: func(ctx context.Context, req LaunchRequest) (VM, error) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.launched = append(h.launched, req)
			return h.vm, nil
		},
		Shutdown: func() { h.mu.Lock(); h.shutdown++; h.mu.Unlock() },
		Lookup:   func(k string) string { return map[string]string{EnvKernel: "/boot/vmlinux", EnvAgent: "/bin/agent"}[k] },
		MountRootfs: func(ms []mount.Mount, target string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.mounts = append(h.mounts, "mount "+ms[0].Type+" "+target)
			return nil
		},
		UnmountRootfs: func(target string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.mounts = append(h.mounts, "unmount "+target)
			return nil
		},
		KillGrace: 100 * time.Millisecond,
	})
	return h
}

// fifos makes stdio FIFOs as containerd does and opens the host's ends:
// it returns the paths, a writer to stdin and readers of stdout and stderr.
func (h *harness) fifos(name string) (stdio, io.WriteCloser, <-chan string, <-chan string) {
	h.t.Helper()
	dir := h.t.TempDir()
	var s stdio
	s.Stdin, s.Stdout, s.Stderr = filepath.Join(dir, name+"-stdin"), filepath.Join(dir, name+"-stdout"), filepath.Join(dir, name+"-stderr")
	ctx := context.Background()
	in, err := fifo.OpenFifo(ctx, s.Stdin, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
	if err != nil {
		h.t.Fatal(err)
	}
	var outs [2]<-chan string
	for i, p := range []string{s.Stdout, s.Stderr} {
		r, err := fifo.OpenFifo(ctx, p, syscall.O_RDONLY|syscall.O_CREAT|syscall.O_NONBLOCK, 0o700)
		if err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { r.Close() })
		outs[i] = readAll(r)
	}
	h.t.Cleanup(func() { in.Close() })
	return s, in, outs[0], outs[1]
}

func (h *harness) create(s stdio) {
	h.t.Helper()
	_, err := h.svc.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle,
		Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Terminal: s.Terminal})
	if err != nil {
		h.t.Fatalf("Create: %v", err)
	}
}

func (h *harness) start(execID string) uint32 {
	h.t.Helper()
	r, err := h.svc.Start(context.Background(), &taskAPI.StartRequest{ID: "t1", ExecID: execID})
	if err != nil {
		h.t.Fatalf("Start %q: %v", execID, err)
	}
	return r.Pid
}

func (h *harness) wait(execID string) uint32 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "t1", ExecID: execID})
	if err != nil {
		h.t.Fatalf("Wait %q: %v", execID, err)
	}
	return r.ExitStatus
}

func (h *harness) state(execID string) *taskAPI.StateResponse {
	h.t.Helper()
	r, err := h.svc.State(context.Background(), &taskAPI.StateRequest{ID: "t1", ExecID: execID})
	if err != nil {
		h.t.Fatalf("State %q: %v", execID, err)
	}
	return r
}

func (h *harness) exec(execID string, args ...string) {
	h.t.Helper()
	a, err := typeurl.MarshalAny(&specs.Process{Args: args, Cwd: "/"})
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = h.svc.Exec(context.Background(), &taskAPI.ExecProcessRequest{ID: "t1", ExecID: execID,
		Spec: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}})
	if err != nil {
		h.t.Fatalf("Exec %q: %v", execID, err)
	}
}

// wantErr checks that err is of containerd's error class is.
func wantErr(t *testing.T, what string, err error, is func(error) bool) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	if !is(errdefs.FromGRPC(err)) {
		t.Fatalf("%s: error %v is of the wrong class", what, err)
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t, testSpec)
	s, _, stdout, stderr := h.fifos("init")
	h.create(s)
	if len(h.launched) != 1 {
		t.Fatalf("launched %d VMs", len(h.launched))
	}
	req := h.launched[0]
	if req.Namespace != "ns1" || req.ID != "t1" || req.Options.Kernel != "/boot/vmlinux" || req.Options.Agent != "/bin/agent" ||
		req.Plan.Hostname != "box" || req.Plan.RootDir != filepath.Join(h.bundle, "rootfs") {
		t.Errorf("launch request %+v plan %+v", req, req.Plan)
	}
	if st := h.state(""); st.Status != task.Status_CREATED || st.Stdout != s.Stdout || st.Bundle != h.bundle {
		t.Errorf("state after Create: %+v", st)
	}
	pid := h.start("")
	p := h.vm.proc(0)
	if int(pid) != p.pid || !reflect.DeepEqual(p.spec.Args, []string{"sh", "-c", "exit 7"}) || !reflect.DeepEqual(p.spec.Env, []string{"PATH=/bin"}) {
		t.Errorf("pid %d, process %+v", pid, p.spec)
	}
	if st := h.state(""); st.Status != task.Status_RUNNING || st.Pid != pid {
		t.Errorf("state after Start: %+v", st)
	}
	pids, err := h.svc.Pids(context.Background(), &taskAPI.PidsRequest{ID: "t1"})
	if err != nil || len(pids.Processes) != 1 || pids.Processes[0].Pid != pid {
		t.Errorf("Pids: %v %v", pids, err)
	}
	c, err := h.svc.Connect(context.Background(), &taskAPI.ConnectRequest{ID: "t1"})
	if err != nil || c.ShimPid != uint32(os.Getpid()) || c.TaskPid != pid {
		t.Errorf("Connect: %v %v", c, err)
	}
	// The process writes, then exits 7; the output reaches the FIFOs and
	// they are closed.
	io.WriteString(p.spec.Stdout, "out\n")
	io.WriteString(p.spec.Stderr, "err\n")
	p.exit(7)
	if st := h.wait(""); st != 7 {
		t.Errorf("Wait: exit status %d, want 7", st)
	}
	if o, e := <-stdout, <-stderr; o != "out\n" || e != "err\n" {
		t.Errorf("stdout %q stderr %q", o, e)
	}
	exit := h.rec.waitTopic(t, runtime.TaskExitEventTopic, 1).(*eventstypes.TaskExit)
	if exit.ContainerID != "t1" || exit.ID != "t1" || exit.Pid != pid || exit.ExitStatus != 7 {
		t.Errorf("TaskExit %+v", exit)
	}
	if st := h.state(""); st.Status != task.Status_STOPPED || st.ExitStatus != 7 || st.ExitedAt == nil {
		t.Errorf("state after exit: %+v", st)
	}
	// Shutdown while the task exists keeps the shim.
	h.svc.Shutdown(context.Background(), &taskAPI.ShutdownRequest{ID: "t1"})
	if h.shutdown != 0 {
		t.Error("Shutdown ended the shim with its task still there")
	}
	d, err := h.svc.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "t1"})
	if err != nil || d.ExitStatus != 7 || d.Pid != pid {
		t.Fatalf("Delete: %v %v", d, err)
	}
	if h.vm.closed != 1 {
		t.Errorf("VM closed %d times", h.vm.closed)
	}
	del := h.rec.waitTopic(t, runtime.TaskDeleteEventTopic, 1).(*eventstypes.TaskDelete)
	if del.ContainerID != "t1" || del.ExitStatus != 7 {
		t.Errorf("TaskDelete %+v", del)
	}
	topics, _ := h.rec.snapshot()
	want := []string{runtime.TaskCreateEventTopic, runtime.TaskStartEventTopic, runtime.TaskExitEventTopic, runtime.TaskDeleteEventTopic}
	if !reflect.DeepEqual(topics, want) {
		t.Errorf("events %v, want %v", topics, want)
	}
	_, err = h.svc.State(context.Background(), &taskAPI.StateRequest{ID: "t1"})
	wantErr(t, "State after Delete", err, errdefs.IsNotFound)
	h.svc.Shutdown(context.Background(), &taskAPI.ShutdownRequest{ID: "t1"})
	if h.shutdown != 1 {
		t.Error("Shutdown after Delete did not end the shim")
	}
}

func TestStateMachineErrors(t *testing.T) {
	h := newHarness(t, testSpec)
	ctx := context.Background()
	_, err := h.svc.Start(ctx, &taskAPI.StartRequest{ID: "t1"})
	wantErr(t, "Start before Create", err, errdefs.IsNotFound)
	h.create(stdio{})
	_, err = h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t2", Bundle: h.bundle})
	wantErr(t, "second Create", err, errdefs.IsAlreadyExists)
	_, err = h.svc.State(ctx, &taskAPI.StateRequest{ID: "t2"})
	wantErr(t, "State of another task", err, errdefs.IsNotFound)
	h.start("")
	_, err = h.svc.Start(ctx, &taskAPI.StartRequest{ID: "t1"})
	wantErr(t, "double Start", err, errdefs.IsFailedPrecondition)
	_, err = h.svc.Start(ctx, &taskAPI.StartRequest{ID: "t1", ExecID: "nope"})
	wantErr(t, "Start of an unknown exec", err, errdefs.IsNotFound)
	_, err = h.svc.Kill(ctx, &taskAPI.KillRequest{ID: "t1", ExecID: "nope", Signal: 15})
	wantErr(t, "Kill of an unknown exec", err, errdefs.IsNotFound)
	_, err = h.svc.Wait(ctx, &taskAPI.WaitRequest{ID: "t1", ExecID: "nope"})
	wantErr(t, "Wait of an unknown exec", err, errdefs.IsNotFound)
	_, err = h.svc.Delete(ctx, &taskAPI.DeleteRequest{ID: "t1"})
	wantErr(t, "Delete of a running task", err, errdefs.IsFailedPrecondition)
	_, err = h.svc.Kill(ctx, &taskAPI.KillRequest{ID: "t1", Signal: 0})
	wantErr(t, "Kill with signal 0", err, errdefs.IsInvalidArgument)
	_, err = h.svc.ResizePty(ctx, &taskAPI.ResizePtyRequest{ID: "t1", Width: 80, Height: 24})
	wantErr(t, "ResizePty without a terminal", err, errdefs.IsFailedPrecondition)
	_, err = h.svc.Update(ctx, &taskAPI.UpdateTaskRequest{ID: "t1"})
	wantErr(t, "Update", err, errdefs.IsNotImplemented)
	h.vm.proc(0).exit(0)
	h.wait("")
	_, err = h.svc.Kill(ctx, &taskAPI.KillRequest{ID: "t1", Signal: 15})
	wantErr(t, "Kill of a stopped task", err, errdefs.IsNotFound)
	_, err = h.svc.Exec(ctx, &taskAPI.ExecProcessRequest{ID: "t1", ExecID: "late", Spec: &anypb.Any{Value: []byte(`{"args":["true"]}`)}})
	wantErr(t, "Exec in a stopped task", err, errdefs.IsFailedPrecondition)
}

func TestBadSpecAndLaunchFailure(t *testing.T) {
	h := newHarness(t, `{"root":{"path":"rootfs"},"process":{"args":[]}}`)
	_, err := h.svc.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle,
		Rootfs: []*apitypes.Mount{{Type: "bind", Source: "/snap", Options: []string{"rbind"}}}})
	wantErr(t, "Create with no args", err, errdefs.IsInvalidArgument)
	if !strings.Contains(err.Error(), "process.args is empty") {
		t.Errorf("error %v does not say why", err)
	}
	root := filepath.Join(h.bundle, "rootfs")
	if want := []string{"mount bind " + root, "unmount " + root}; !reflect.DeepEqual(h.mounts, want) {
		t.Errorf("mounts %q, want %q", h.mounts, want)
	}

	h = newHarness(t, testSpec)
	h.svc.cfg.Launch = func(ctx context.Context, req LaunchRequest) (VM, error) { return nil, errors.New("no kvm") }
	_, err = h.svc.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle})
	if err == nil || !strings.Contains(err.Error(), "no kvm") {
		t.Fatalf("Create with a failing boot: %v", err)
	}
	_, err = h.svc.State(context.Background(), &taskAPI.StateRequest{ID: "t1"})
	wantErr(t, "State after a failed Create", err, errdefs.IsNotFound)

	// An id that is no containerd identifier fails before anything boots.
	h = newHarness(t, testSpec)
	_, err = h.svc.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "a b", Bundle: h.bundle})
	wantErr(t, "Create with a bad id", err, errdefs.IsInvalidArgument)
	if len(h.launched) != 0 {
		t.Errorf("launched %d VMs for a bad id", len(h.launched))
	}
}

func TestRootfsMountedAndUnmounted(t *testing.T) {
	h := newHarness(t, testSpec)
	_, err := h.svc.Create(context.Background(), &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle,
		Rootfs: []*apitypes.Mount{{Type: "overlay", Source: "overlay", Options: []string{"lowerdir=/a"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "t1"}); err != nil {
		t.Fatalf("Delete of a created task: %v", err)
	}
	root := filepath.Join(h.bundle, "rootfs")
	if want := []string{"mount overlay " + root, "unmount " + root}; !reflect.DeepEqual(h.mounts, want) {
		t.Errorf("mounts %q, want %q", h.mounts, want)
	}
	if h.vm.closed != 1 {
		t.Errorf("VM closed %d times", h.vm.closed)
	}
}

func TestExec(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	initPid := h.start("")
	s, _, stdout, _ := h.fifos("e1")
	a, _ := typeurl.MarshalAny(&specs.Process{Args: []string{"sh", "-c", "exit 3"}, Cwd: "/tmp", User: specs.User{UID: 7, GID: 8}})
	_, err := h.svc.Exec(context.Background(), &taskAPI.ExecProcessRequest{ID: "t1", ExecID: "e1",
		Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, Spec: &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}})
	if err != nil {
		t.Fatal(err)
	}
	added := h.rec.waitTopic(t, runtime.TaskExecAddedEventTopic, 1).(*eventstypes.TaskExecAdded)
	if added.ExecID != "e1" {
		t.Errorf("TaskExecAdded %+v", added)
	}
	_, err = h.svc.Exec(context.Background(), &taskAPI.ExecProcessRequest{ID: "t1", ExecID: "e1", Spec: &anypb.Any{Value: []byte(`{"args":["true"]}`)}})
	wantErr(t, "duplicate exec id", err, errdefs.IsAlreadyExists)
	_, err = h.svc.Exec(context.Background(), &taskAPI.ExecProcessRequest{ID: "t1", ExecID: "e2", Spec: &anypb.Any{Value: []byte(`{"args":["true"],"cwd":"rel"}`)}})
	wantErr(t, "exec with a relative cwd", err, errdefs.IsInvalidArgument)
	if st := h.state("e1"); st.Status != task.Status_CREATED || st.ExecID != "e1" {
		t.Errorf("exec state %+v", st)
	}
	pid := h.start("e1")
	p := h.vm.proc(1)
	if p.spec.Cwd != "/tmp" || p.spec.UID != 7 || p.spec.GID != 8 || p.spec.Args[2] != "exit 3" {
		t.Errorf("exec process %+v", p.spec)
	}
	started := h.rec.waitTopic(t, runtime.TaskExecStartedEventTopic, 1).(*eventstypes.TaskExecStarted)
	if started.ExecID != "e1" || started.Pid != pid {
		t.Errorf("TaskExecStarted %+v", started)
	}
	pids, _ := h.svc.Pids(context.Background(), &taskAPI.PidsRequest{ID: "t1"})
	if len(pids.Processes) != 2 || pids.Processes[0].Pid != initPid || pids.Processes[1].Pid != pid {
		t.Errorf("Pids %v", pids.Processes)
	}
	io.WriteString(p.spec.Stdout, "hello")
	p.exit(3)
	if st := h.wait("e1"); st != 3 {
		t.Errorf("exec status %d, want 3", st)
	}
	if o := <-stdout; o != "hello" {
		t.Errorf("exec stdout %q", o)
	}
	exit := h.rec.waitTopic(t, runtime.TaskExitEventTopic, 1).(*eventstypes.TaskExit)
	if exit.ID != "e1" || exit.ExitStatus != 3 || exit.Pid != pid {
		t.Errorf("TaskExit %+v", exit)
	}
	d, err := h.svc.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "t1", ExecID: "e1"})
	if err != nil || d.ExitStatus != 3 {
		t.Fatalf("Delete exec: %v %v", d, err)
	}
	if h.vm.closed != 0 {
		t.Error("deleting an exec closed the VM")
	}
	_, err = h.svc.State(context.Background(), &taskAPI.StateRequest{ID: "t1", ExecID: "e1"})
	wantErr(t, "State of a deleted exec", err, errdefs.IsNotFound)
	if st := h.state(""); st.Status != task.Status_RUNNING {
		t.Errorf("init after the exec: %+v", st)
	}
}

func TestInitExitKillsExecs(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.start("")
	h.exec("e1", "sleep", "100")
	h.start("e1")
	e := h.vm.proc(1)
	e.exitOn = syscall.SIGKILL
	h.vm.proc(0).exit(0)
	if st := h.wait("e1"); st != 137 {
		t.Errorf("exec status %d after the init ended, want 137", st)
	}
	if got := e.gotSignals(); !reflect.DeepEqual(got, []sigRec{{syscall.SIGKILL, true}}) {
		t.Errorf("exec got %v", got)
	}
}

func TestKill(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.start("")
	h.exec("e1", "sleep", "100")
	h.start("e1")
	p := h.vm.proc(0)
	p.exitOn = syscall.SIGTERM
	if _, err := h.svc.Kill(context.Background(), &taskAPI.KillRequest{ID: "t1", Signal: uint32(syscall.SIGTERM), All: true}); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(""); st != 143 {
		t.Errorf("status %d after SIGTERM, want 143", st)
	}
	if got := p.gotSignals(); !reflect.DeepEqual(got, []sigRec{{syscall.SIGTERM, true}}) {
		t.Errorf("init got %v", got)
	}
	// all: the execs get it too (then SIGKILL as the init ended).
	if got := h.vm.proc(1).gotSignals(); len(got) == 0 || got[0] != (sigRec{syscall.SIGTERM, true}) {
		t.Errorf("exec got %v", got)
	}
	if h.vm.killed != 0 {
		t.Error("SIGTERM stopped the VM")
	}
}

func TestSIGKILLStopsAStuckVM(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.start("")
	// The process ignores the signal (a stuck guest): after KillGrace the
	// VM is stopped and the process is reported killed.
	if _, err := h.svc.Kill(context.Background(), &taskAPI.KillRequest{ID: "t1", Signal: uint32(syscall.SIGKILL)}); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(""); st != 137 {
		t.Errorf("status %d, want 137", st)
	}
	if h.vm.killed != 1 {
		t.Errorf("VM killed %d times, want 1", h.vm.killed)
	}
}

func TestSIGKILLKeepsAVMWhoseProcessEnds(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.start("")
	h.vm.proc(0).exitOn = syscall.SIGKILL
	h.svc.Kill(context.Background(), &taskAPI.KillRequest{ID: "t1", Signal: uint32(syscall.SIGKILL)})
	if st := h.wait(""); st != 137 {
		t.Errorf("status %d, want 137", st)
	}
	time.Sleep(3 * h.svc.cfg.KillGrace)
	if h.vm.killed != 0 {
		t.Error("the VM was stopped though the process ended")
	}
}

func TestLostProcess(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.start("")
	h.vm.Kill() // the machine ends by itself (a guest crash)
	if st := h.wait(""); st != statusLost {
		t.Errorf("status %d, want %d", st, statusLost)
	}
}

func TestKillCreated(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	if _, err := h.svc.Kill(context.Background(), &taskAPI.KillRequest{ID: "t1", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(""); st != 137 {
		t.Errorf("status %d, want 137", st)
	}
	_, err := h.svc.Start(context.Background(), &taskAPI.StartRequest{ID: "t1"})
	wantErr(t, "Start after Kill", err, errdefs.IsFailedPrecondition)
}

func TestCloseIO(t *testing.T) {
	h := newHarness(t, testSpec)
	s, in, _, _ := h.fifos("init")
	h.create(s)
	h.start("")
	p := h.vm.proc(0)
	got := readAll(p.spec.Stdin)
	io.WriteString(in, "typed")
	// containerd keeps its end open; CloseIO is how the process sees EOF.
	time.Sleep(50 * time.Millisecond)
	if _, err := h.svc.CloseIO(context.Background(), &taskAPI.CloseIORequest{ID: "t1", Stdin: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-got:
		if g != "typed" {
			t.Errorf("stdin %q", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the process's stdin did not end after CloseIO")
	}
}

func TestTerminal(t *testing.T) {
	h := newHarness(t, testSpec)
	s, _, stdout, _ := h.fifos("init")
	s.Stderr = ""
	s.Terminal = true
	h.create(s)
	_, err := h.svc.ResizePty(context.Background(), &taskAPI.ResizePtyRequest{ID: "t1", Width: 100, Height: 30})
	if err != nil {
		t.Fatal(err)
	}
	h.start("")
	p := h.vm.proc(0)
	if !p.spec.Terminal || p.spec.Rows != 30 || p.spec.Cols != 100 || p.spec.Stderr != nil {
		t.Errorf("process %+v", p.spec)
	}
	if _, err := h.svc.ResizePty(context.Background(), &taskAPI.ResizePtyRequest{ID: "t1", Width: 120, Height: 40}); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.resizes, [][2]uint16{{40, 120}}) {
		t.Errorf("resizes %v", p.resizes)
	}
	io.WriteString(p.spec.Stdout, "tty")
	p.exit(0)
	if o := <-stdout; o != "tty" {
		t.Errorf("stdout %q", o)
	}
}

func TestStats(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.vm.stats = VMStats{CPUUsec: 1234, MemoryUsage: 5 << 20, MemoryLimit: 256 << 20}
	r, err := h.svc.Stats(context.Background(), &taskAPI.StatsRequest{ID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := typeurl.UnmarshalAny(r.Stats)
	if err != nil {
		t.Fatal(err)
	}
	m, ok := v.(*stats.Metrics)
	if !ok {
		t.Fatalf("stats are %T", v)
	}
	if m.CPU.UsageUsec != 1234 || m.Memory.Usage != 5<<20 || m.Memory.UsageLimit != 256<<20 {
		t.Errorf("metrics %v", m)
	}
}

func TestOptions(t *testing.T) {
	env := map[string]string{EnvKernel: "/env/kernel", EnvCmdline: "quiet", EnvAgent: "/env/agent"}
	lookup := func(k string) string { return env[k] }
	anyOf := func(v any) *anypb.Any {
		a, err := typeurl.MarshalAny(v)
		if err != nil {
			t.Fatal(err)
		}
		return &anypb.Any{TypeUrl: a.GetTypeUrl(), Value: a.GetValue()}
	}
	o, err := optionsFrom(nil, lookup)
	if err != nil || o != (Options{Kernel: "/env/kernel", Cmdline: "quiet", Agent: "/env/agent"}) {
		t.Errorf("environment only: %+v %v", o, err)
	}
	if got := o.cmdline(); got != "console=ttyS0 panic=-1 quiet" {
		t.Errorf("cmdline %q", got)
	}
	body := []byte("Kernel = \"/opt/k\"\nCmdline = \"loglevel=3\"\nStateDir = \"/run/x\"\nWarmDir = \"/var/cache/w\"\nCold = true\n")
	o, err = optionsFrom(anyOf(&runtimeOptions{ConfigBody: body}), lookup)
	if err != nil || o != (Options{Kernel: "/opt/k", Cmdline: "loglevel=3", Agent: "/env/agent", StateDir: "/run/x", WarmDir: "/var/cache/w", Cold: true}) {
		t.Errorf("config body: %+v %v", o, err)
	}
	path := filepath.Join(t.TempDir(), "shim.toml")
	os.WriteFile(path, []byte("Agent = \"/opt/agent\"\n"), 0o644)
	o, err = optionsFrom(anyOf(&runtimeOptions{ConfigPath: path}), lookup)
	if err != nil || o.Agent != "/opt/agent" || o.Kernel != "/env/kernel" {
		t.Errorf("config path: %+v %v", o, err)
	}
	if _, err := optionsFrom(anyOf(&runtimeOptions{ConfigBody: []byte("Kernel = [")}), lookup); err == nil {
		t.Error("bad TOML accepted")
	}
	if _, err := optionsFrom(anyOf(&runtimeOptions{ConfigPath: "/nonexistent/shim.toml"}), lookup); err == nil {
		t.Error("missing config file accepted")
	}
	if _, err := optionsFrom(anyOf(&apitypes.Mount{Type: "x"}), lookup); err == nil || !strings.Contains(err.Error(), "want runtimeoptions") {
		t.Errorf("options of another type: %v", err)
	}
	if _, err := optionsFrom(nil, func(string) string { return "" }); err == nil || !strings.Contains(err.Error(), EnvKernel) {
		t.Errorf("no kernel: %v", err)
	}
}

func TestMachineName(t *testing.T) {
	if n, err := machineName("k8s.io", "t1"); err != nil || n != "containerd-k8s.io-t1" {
		t.Errorf("short name %q %v", n, err)
	}
	// Two longest ids in a longest namespace that differ only in their
	// last byte: the names are cut, yet differ, and are the same each time.
	ns := strings.Repeat("n", 76)
	a, b := strings.Repeat("a", 75)+"1", strings.Repeat("a", 75)+"2"
	na, errA := machineName(ns, a)
	nb, errB := machineName(ns, b)
	if errA != nil || errB != nil {
		t.Fatalf("long ids: %v, %v", errA, errB)
	}
	if na == nb {
		t.Errorf("ids %q and %q have one name %q", a, b, na)
	}
	for _, n := range []string{na, nb} {
		if err := inventory.ValidateName(n); err != nil || !strings.HasPrefix(n, "containerd-"+ns+"-aaa") {
			t.Errorf("long name %q: %v", n, err)
		}
	}
	if again, _ := machineName(ns, a); again != na {
		t.Errorf("name of %q changed: %q, then %q", a, na, again)
	}
	for _, tc := range [][2]string{{"k8s.io", "with space"}, {"k8s.io", "a\x01"}, {"k8s.io", ""}, {"", "t1"},
		{"k8s.io", strings.Repeat("x", 77)}, {"k8s.io", "a/b"}} {
		if n, err := machineName(tc[0], tc[1]); err == nil {
			t.Errorf("namespace %q id %q: name %q, want an error", tc[0], tc[1], n)
		}
	}
}

func TestCollectTask(t *testing.T) {
	dir := t.TempDir()
	mk := func(id, ns, task string) {
		e, err := inventory.Register(dir, inventory.Record{ID: id, PID: os.Getpid(), Host: "vmm-host", Labels: map[string]string{LabelNamespace: ns, LabelID: task}})
		if err != nil {
			t.Fatal(err)
		}
		e.Close() // its VMM let go: ended or crashed
	}
	mk("0000000000000001", "ns1", "t1")
	mk("0000000000000002", "ns1", "t2")
	mk("0000000000000003", "ns2", "t1")
	running, err := inventory.Register(dir, inventory.Record{ID: "0000000000000004", PID: os.Getpid(), Labels: map[string]string{LabelNamespace: "ns1", LabelID: "t1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer running.Close()
	trailPath := filepath.Join(t.TempDir(), "audit.jsonl")
	t.Setenv(audit.Env, trailPath)
	if err := collectTask("ns1", "t1", dir, ""); err != nil {
		t.Fatal(err)
	}
	vms, err := inventory.List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, v := range vms {
		left = append(left, v.ID)
	}
	if want := []string{"0000000000000002", "0000000000000003", "0000000000000004"}; !reflect.DeepEqual(sortStrings(left), want) {
		t.Errorf("left %v, want %v", left, want)
	}
	trail, err := os.ReadFile(trailPath)
	if err != nil || !strings.Contains(string(trail), `"vm.collected"`) || !strings.Contains(string(trail), "0000000000000001") ||
		!strings.Contains(string(trail), `"vmm_host":"vmm-host"`) {
		t.Errorf("audit trail %q %v", trail, err)
	}
}

func sortStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

type runtimeOptions = runtimeoptions.Options

func TestSlowStartHoldsNothingUp(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.vm.gate, h.vm.entered = make(chan struct{}), make(chan struct{}, 1)
	started := make(chan error, 1)
	go func() {
		_, err := h.svc.Start(context.Background(), &taskAPI.StartRequest{ID: "t1"})
		started <- err
	}()
	<-h.vm.entered
	answered := make(chan error, 1)
	go func() {
		_, err := h.svc.State(context.Background(), &taskAPI.StateRequest{ID: "t1"})
		if err == nil {
			_, err = h.svc.Kill(context.Background(), &taskAPI.KillRequest{ID: "t1", Signal: 9})
			if errdefs.IsFailedPrecondition(errdefs.FromGRPC(err)) {
				err = nil
			}
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		if err != nil {
			t.Errorf("State or Kill while starting: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("State blocked while the agent was starting the process")
	}
	close(h.vm.gate)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if st := h.state(""); st.Status != task.Status_RUNNING {
		t.Errorf("state %v", st.Status)
	}
}

func TestWarmDir(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if d, ok := warmDir(Options{WarmDir: "/w"}, log); !ok || d != "/w" {
		t.Errorf("WarmDir: %q %v", d, ok)
	}
	if _, ok := warmDir(Options{WarmDir: "/w", Cold: true}, log); ok {
		t.Error("Cold still warm")
	}
	t.Setenv("XDG_CACHE_HOME", "/cache")
	if d, ok := warmDir(Options{}, log); !ok || d != "/cache/corral/warm" {
		t.Errorf("default: %q %v", d, ok)
	}
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "")
	if d, ok := warmDir(Options{}, log); ok {
		t.Errorf("no cache directory, yet warm in %q", d)
	}
}

// TestPauseResume: Pause freezes the VM and the task reads PAUSED (the
// exec's state too) until Resume; Pause twice, Resume of a running task,
// Pause of a task not running and Start while paused are refused; the
// events go out.
func TestPauseResume(t *testing.T) {
	h := newHarness(t, testSpec)
	ctx := context.Background()
	h.create(stdio{})
	_, err := h.svc.Pause(ctx, &taskAPI.PauseRequest{ID: "t1"})
	wantErr(t, "Pause of a created task", err, errdefs.IsFailedPrecondition)
	h.start("")
	h.exec("e1", "sleep", "9")
	h.start("e1")
	h.exec("e2", "true")
	if _, err := h.svc.Pause(ctx, &taskAPI.PauseRequest{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	if !h.vm.paused {
		t.Error("Pause did not pause the VM")
	}
	if st := h.state(""); st.Status != task.Status_PAUSED {
		t.Errorf("init %s while paused, want PAUSED", st.Status)
	}
	if st := h.state("e1"); st.Status != task.Status_PAUSED {
		t.Errorf("exec %s while paused, want PAUSED", st.Status)
	}
	if st := h.state("e2"); st.Status != task.Status_CREATED {
		t.Errorf("created exec %s while paused, want CREATED", st.Status)
	}
	_, err = h.svc.Pause(ctx, &taskAPI.PauseRequest{ID: "t1"})
	wantErr(t, "second Pause", err, errdefs.IsFailedPrecondition)
	_, err = h.svc.Start(ctx, &taskAPI.StartRequest{ID: "t1", ExecID: "e2"})
	wantErr(t, "Start of an exec while paused", err, errdefs.IsFailedPrecondition)
	h.rec.waitTopic(t, runtime.TaskPausedEventTopic, 1)
	if _, err := h.svc.Resume(ctx, &taskAPI.ResumeRequest{ID: "t1"}); err != nil {
		t.Fatal(err)
	}
	if h.vm.paused {
		t.Error("Resume did not resume the VM")
	}
	if st := h.state(""); st.Status != task.Status_RUNNING {
		t.Errorf("init %s after Resume, want RUNNING", st.Status)
	}
	_, err = h.svc.Resume(ctx, &taskAPI.ResumeRequest{ID: "t1"})
	wantErr(t, "Resume of a running task", err, errdefs.IsFailedPrecondition)
	h.rec.waitTopic(t, runtime.TaskResumedEventTopic, 1)
	h.start("e2")
}

// TestExecStartedAsInitEnds: an exec whose start the agent was still
// answering when the init ended is killed too, as the running ones are.
func TestExecStartedAsInitEnds(t *testing.T) {
	h := newHarness(t, testSpec)
	h.create(stdio{})
	h.start("")
	h.exec("e1", "sleep", "100")
	h.vm.gate, h.vm.entered = make(chan struct{}), make(chan struct{}, 1)
	started := make(chan error, 1)
	go func() {
		_, err := h.svc.Start(context.Background(), &taskAPI.StartRequest{ID: "t1", ExecID: "e1"})
		started <- err
	}()
	<-h.vm.entered
	h.vm.proc(0).exit(0)
	h.wait("")
	close(h.vm.gate)
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	e := h.vm.proc(1)
	if got := e.gotSignals(); !reflect.DeepEqual(got, []sigRec{{syscall.SIGKILL, true}}) {
		t.Errorf("the late exec got %v, want a SIGKILL to its group", got)
	}
}

// gateLaunch makes h's Launch signal entered and wait for gate (or, with
// honourCancel, the boot's cancellation) before it returns h's VM.
func (h *harness) gateLaunch(honourCancel bool) (entered chan struct{}, gate chan struct{}) {
	entered, gate = make(chan struct{}, 1), make(chan struct{})
	h.svc.cfg.Launch = func(ctx context.Context, req LaunchRequest) (VM, error) {
		entered <- struct{}{}
		if honourCancel {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		} else {
			<-gate
		}
		return h.vm, nil
	}
	return entered, gate
}

// within runs f and fails the test if it has not returned in 5 s.
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { f(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s blocked while Create booted the VM", what)
	}
}

// TestSlowBootHoldsNothingUp: while Create boots the VM, Connect, State,
// Kill, Delete, a second Create and Shutdown answer at once: calls about
// the task are refused as premature, and Shutdown keeps the shim.
func TestSlowBootHoldsNothingUp(t *testing.T) {
	h := newHarness(t, testSpec)
	entered, gate := h.gateLaunch(false)
	ctx := context.Background()
	created := make(chan error, 1)
	go func() {
		_, err := h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle})
		created <- err
	}()
	<-entered
	defer func() {
		select {
		case <-gate:
		default:
			close(gate) // let a blocked call end
		}
	}()
	within(t, "Connect", func() {
		c, err := h.svc.Connect(ctx, &taskAPI.ConnectRequest{ID: "t1"})
		if err != nil || c.ShimPid != uint32(os.Getpid()) || c.TaskPid != 0 {
			t.Errorf("Connect: %v %v", c, err)
		}
	})
	within(t, "State", func() {
		_, err := h.svc.State(ctx, &taskAPI.StateRequest{ID: "t1"})
		wantErr(t, "State while creating", err, errdefs.IsFailedPrecondition)
	})
	within(t, "Kill", func() {
		_, err := h.svc.Kill(ctx, &taskAPI.KillRequest{ID: "t1", Signal: 9})
		wantErr(t, "Kill while creating", err, errdefs.IsFailedPrecondition)
	})
	within(t, "Delete", func() {
		_, err := h.svc.Delete(ctx, &taskAPI.DeleteRequest{ID: "t1"})
		wantErr(t, "Delete while creating", err, errdefs.IsFailedPrecondition)
	})
	within(t, "second Create", func() {
		_, err := h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t2", Bundle: h.bundle})
		wantErr(t, "second Create while creating", err, errdefs.IsAlreadyExists)
	})
	within(t, "Shutdown", func() {
		h.svc.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "t1"})
	})
	h.mu.Lock()
	n := h.shutdown
	h.mu.Unlock()
	if n != 0 {
		t.Error("Shutdown ended the shim while its task was being created")
	}
	close(gate)
	if err := <-created; err != nil {
		t.Fatalf("Create: %v", err)
	}
	if st := h.state(""); st.Status != task.Status_CREATED {
		t.Errorf("state after Create: %v", st.Status)
	}
	if h.vm.closed != 0 || h.vm.killed != 0 {
		t.Errorf("VM closed %d, killed %d times", h.vm.closed, h.vm.killed)
	}
}

// TestShutdownNowDuringCreate: Shutdown with Now while Create boots
// cancels the boot, or, when the VM comes up anyway, has Create close it
// (which removes its inventory entry) and fail; Shutdown returns, and
// ends the shim, only once Create has, and a later Create is refused.
func TestShutdownNowDuringCreate(t *testing.T) {
	for _, honour := range []bool{true, false} {
		name := "boot cancelled"
		if !honour {
			name = "boot ends anyway"
		}
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, testSpec)
			entered, gate := h.gateLaunch(honour)
			ctx := context.Background()
			created := make(chan error, 1)
			go func() {
				_, err := h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle})
				created <- err
			}()
			<-entered
			shut := make(chan struct{})
			go func() {
				h.svc.Shutdown(ctx, &taskAPI.ShutdownRequest{ID: "t1", Now: true})
				close(shut)
			}()
			if !honour {
				select {
				case <-shut:
					t.Fatal("Shutdown returned with the VM still booting")
				case <-time.After(50 * time.Millisecond):
				}
				close(gate)
			}
			var err error
			select {
			case err = <-created:
			case <-time.After(5 * time.Second):
				t.Fatal("Create did not end")
			}
			if err == nil {
				t.Fatal("Create succeeded after Shutdown")
			}
			select {
			case <-shut:
			case <-time.After(5 * time.Second):
				t.Fatal("Shutdown did not end")
			}
			h.mu.Lock()
			n := h.shutdown
			h.mu.Unlock()
			if n != 1 {
				t.Errorf("shim shut down %d times", n)
			}
			if !honour && h.vm.closed != 1 {
				t.Errorf("the VM that came up was closed %d times, want 1", h.vm.closed)
			}
			_, err = h.svc.State(ctx, &taskAPI.StateRequest{ID: "t1"})
			wantErr(t, "State after the aborted Create", err, errdefs.IsNotFound)
			_, err = h.svc.Create(ctx, &taskAPI.CreateTaskRequest{ID: "t1", Bundle: h.bundle})
			wantErr(t, "Create after Shutdown", err, errdefs.IsFailedPrecondition)
		})
	}
}
