// Package task is the containerd task service (API v2 over ttrpc) of
// containerd-shim-corral-v2: one shim serves one task, whose VM runs in the
// shim's process.
//
// Lifecycle:
//   - Create reads the bundle (mounting the request's rootfs mounts at
//     bundle/rootfs first, as runc's shim does), translates the spec
//     (package oci), opens the stdio FIFOs and boots the VM, so that Start
//     is quick; the guest's root is bundle/rootfs over virtio-9p. The boot
//     holds no lock: other calls are answered meanwhile, those about the
//     task refused as premature (FailedPrecondition).
//   - Start runs the process through the agent; the pid reported (events,
//     State, Pids) is the process's pid in the guest.
//   - An exit status is the process's own, or 128+n when signal n ended
//     it (as runc reports); 137 when the shim stopped the VM after SIGKILL
//     and 255 when the VM was lost otherwise.
//   - Kill forwards the signal (to the process group with all); a SIGKILL
//     of the init process stops the VM when the process has not ended
//     within KillGrace. When the init process ends, the exec processes are
//     killed (a container's processes end with its init).
//   - Delete of the init process powers the VM off (bounded, then
//     stopped), removes its inventory entry and unmounts the rootfs.
//   - Shutdown ends the shim once the task is deleted; with Now at once,
//     after stopping the VM (one Create is booting is cancelled, or closed
//     if it came up). The queued events are sent, then the publisher
//     closed, by the shutdown callback (CloseOnShutdown).
//
// Events: TaskCreate, TaskStart, TaskExecAdded, TaskExecStarted, TaskExit,
// TaskDelete, TaskPaused, TaskResumed. Pause freezes the whole VM (its
// vCPUs and devices: what a cgroup freezer does to a runc container) and
// Resume thaws it; processes are reported PAUSED meanwhile, and Start of
// an exec waits for Resume (it is refused). Checkpoint and Update are not
// implemented.
package task

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/protobuf"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/corral-vmm/corral/agent/proto"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/shim/oci"
)

// Bounds of the service's own waits.
const (
	// KillGrace is how long the init process has to end after SIGKILL
	// before the VM is stopped.
	KillGrace = 2 * time.Second
	// BootTimeout bounds the VM's boot in Create.
	BootTimeout = 3 * time.Minute
)

// Exit statuses the shim reports itself.
const (
	statusVMKilled = 128 + int(syscall.SIGKILL)
	statusLost     = 255
)

// Publisher sends events to containerd (shim.Publisher in the binary).
type Publisher = events.Publisher

// Config are a Service's ties to the host.
type Config struct {
	// Namespace is the containerd namespace of the task.
	Namespace string
	// Publisher receives the events; ctx is the context they are sent with
	// (it carries the namespace).
	Publisher Publisher
	// Launch boots a task's VM.
	Launch Launcher
	// Shutdown ends the shim (the shim library's shutdown service).
	Shutdown func()
	// Lookup reads the environment (os.Getenv when nil).
	Lookup func(string) string
	// MountRootfs mounts a Create request's rootfs mounts at target, and
	// UnmountRootfs undoes it; nil means containerd's mount package.
	MountRootfs   func(mounts []mount.Mount, target string) error
	UnmountRootfs func(target string) error
	// Log receives the service's logs; nil discards them.
	Log *slog.Logger
	// KillGrace overrides the package's KillGrace when positive.
	KillGrace time.Duration
	// Begun is when the serving shim's process began (ProcessBegun); the
	// first Create logs its time since then at debug level. Zero: not
	// logged.
	Begun time.Time
}

// Service implements containerd's task API v2 for one task.
type Service struct {
	cfg    Config
	events *eventQueue

	mu      sync.Mutex
	id      string
	bundle  string
	vm      VM
	init    *process
	execs   map[string]*process
	mounted string // the rootfs Create mounted, to unmount on Delete
	deleted bool
	// vmStopped is set when the shim stopped the VM after a SIGKILL: the
	// processes it took are reported killed.
	vmStopped bool
	// paused is set between Pause and Resume.
	paused bool
	// creating is set while Create boots the task's VM, outside the lock:
	// id is reserved, but the task has no process yet. cancelBoot cancels
	// that boot and createDone is closed when that Create returns.
	creating   bool
	cancelBoot context.CancelFunc
	createDone chan struct{}
	// shutdown is set by Shutdown with Now: Create is refused after it, and
	// a boot that ends after it is torn down.
	shutdown bool
	// flushTimeout bounds the send of the queued events at shutdown.
	flushTimeout time.Duration
}

var _ taskAPI.TaskService = (*Service)(nil)

// NewService returns the task service; ctx is used to publish events.
func NewService(ctx context.Context, cfg Config) *Service {
	if cfg.Lookup == nil {
		cfg.Lookup = os.Getenv
	}
	if cfg.MountRootfs == nil {
		cfg.MountRootfs = func(ms []mount.Mount, target string) error { return mount.All(ms, target) }
	}
	if cfg.UnmountRootfs == nil {
		cfg.UnmountRootfs = func(target string) error { return mount.UnmountAll(target, 0) }
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Shutdown == nil {
		cfg.Shutdown = func() {}
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = KillGrace
	}
	return &Service{cfg: cfg, execs: map[string]*process{}, flushTimeout: FlushTimeout,
		events: &eventQueue{pub: cfg.Publisher, ctx: ctx, log: cfg.Log}}
}

// process is the init process or an exec.
type process struct {
	execID string // "" for the init process
	spec   oci.Process
	stdio  stdio
	io     *procIO

	// Guarded by Service.mu.
	status     task.Status
	starting   bool // Start is asking the agent
	proc       Proc
	pid        int
	exitStatus int
	exitedAt   time.Time
	done       chan struct{} // closed once stopped
}

// publish queues an event for containerd; they go in order, off the
// caller's path (eventQueue).
func (s *Service) publish(topic string, ev events.Event) { s.events.publish(topic, ev) }

// errf wraps a containerd error class (errdefs) for the ttrpc reply.
func errf(class error, format string, a ...any) error {
	return errdefs.ToGRPC(fmt.Errorf("%w: "+format, append([]any{class}, a...)...))
}

// get returns the process id/execID names; s.mu held.
func (s *Service) get(id, execID string) (*process, error) {
	if s.creating && id == s.id {
		return nil, errf(errdefs.ErrFailedPrecondition, "task %q is being created", id)
	}
	if s.init == nil || id != s.id || s.deleted {
		return nil, errf(errdefs.ErrNotFound, "task %q", id)
	}
	if execID == "" {
		return s.init, nil
	}
	p, ok := s.execs[execID]
	if !ok {
		return nil, errf(errdefs.ErrNotFound, "exec %q of task %q", execID, id)
	}
	return p, nil
}

// Create boots the task's VM; the process starts in Start. The boot runs
// outside the lock, as Start asks the agent outside it: calls about the
// task meanwhile are refused as premature (it is being created), and the
// others are answered.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	steps := agentvm.NewSteps(s.cfg.Log, "shim: create")
	if !s.cfg.Begun.IsZero() {
		s.cfg.Log.Debug("shim: create called", "since_process_begun", time.Since(s.cfg.Begun).Round(time.Millisecond))
	}
	if r.Checkpoint != "" {
		return nil, errf(errdefs.ErrNotImplemented, "task %q: restoring a checkpoint", r.ID)
	}
	if _, err := machineName(s.cfg.Namespace, r.ID); err != nil {
		return nil, errf(errdefs.ErrInvalidArgument, "task %q: %v", r.ID, err)
	}
	bctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	s.mu.Lock()
	if s.init != nil || s.creating {
		other := s.id
		s.mu.Unlock()
		return nil, errf(errdefs.ErrAlreadyExists, "task %q: this shim already has task %q", r.ID, other)
	}
	if s.shutdown {
		s.mu.Unlock()
		return nil, errf(errdefs.ErrFailedPrecondition, "task %q: the shim is shutting down", r.ID)
	}
	done := make(chan struct{})
	s.creating, s.id, s.cancelBoot, s.createDone = true, r.ID, cancel, done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.creating, s.cancelBoot = false, nil
		if s.init == nil {
			s.id = ""
		}
		close(done)
		s.mu.Unlock()
	}()

	opts, err := optionsFrom(r.Options, s.cfg.Lookup)
	if err != nil {
		return nil, errf(errdefs.ErrInvalidArgument, "task %q: %v", r.ID, err)
	}
	if err := saveStateDir(r.Bundle, opts.StateDir); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: task %q: %w", r.ID, err))
	}
	rootfs := filepath.Join(r.Bundle, "rootfs")
	if len(r.Rootfs) > 0 {
		ms := make([]mount.Mount, len(r.Rootfs))
		for i, m := range r.Rootfs {
			ms[i] = mount.Mount{Type: m.Type, Source: m.Source, Target: m.Target, Options: m.Options}
		}
		if err := os.MkdirAll(rootfs, 0o711); err != nil {
			return nil, errdefs.ToGRPC(fmt.Errorf("shim: task %q: %w", r.ID, err))
		}
		if err := s.cfg.MountRootfs(ms, rootfs); err != nil {
			return nil, errdefs.ToGRPC(fmt.Errorf("shim: task %q: mounting the rootfs: %w", r.ID, err))
		}
		defer func() {
			if retErr != nil {
				s.cfg.UnmountRootfs(rootfs)
			}
		}()
		steps.Step("rootfs mounted")
	}
	spec, err := oci.Load(r.Bundle)
	if err != nil {
		return nil, errf(errdefs.ErrInvalidArgument, "task %q: %v", r.ID, err)
	}
	plan, err := oci.Translate(spec, r.Bundle)
	if err != nil {
		return nil, errf(errdefs.ErrInvalidArgument, "task %q: %v", r.ID, err)
	}
	for _, sk := range plan.Skipped {
		// Every spec has some (/proc, /dev, /sys: the agent's own);
		// not worth a line at info level for every task.
		s.cfg.Log.Debug("shim: mount skipped", "task", r.ID, "mount", sk)
	}
	if plan.NetNS != "" {
		s.cfg.Log.Info("shim: the spec's network namespace is not plumbed into the VM; it has no network", "task", r.ID, "netns", plan.NetNS)
	}
	steps.Step("spec translated")
	st := stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	pio, err := openIO(st)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	steps.Step("stdio opened")
	vm, err := s.cfg.Launch(bctx, LaunchRequest{Namespace: s.cfg.Namespace, ID: r.ID, Plan: plan, Options: opts})
	if err != nil {
		pio.Close()
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: task %q: booting the VM: %w", r.ID, err))
	}
	steps.Step("VM started")
	s.mu.Lock()
	if s.shutdown {
		// Shutdown came during the boot and waits for this teardown.
		s.mu.Unlock()
		pio.Close()
		if err := vm.Close(); err != nil {
			s.cfg.Log.Warn("shim: releasing the VM", "task", r.ID, "err", err)
		}
		return nil, errf(errdefs.ErrAborted, "task %q: the shim shut down while its VM booted", r.ID)
	}
	defer s.mu.Unlock()
	s.creating, s.cancelBoot = false, nil
	s.bundle, s.vm = r.Bundle, vm
	if len(r.Rootfs) > 0 {
		s.mounted = rootfs
	}
	spec0 := plan.Process
	spec0.Terminal = r.Terminal
	s.init = &process{spec: spec0, stdio: st, io: pio, status: task.Status_CREATED, done: make(chan struct{})}
	s.publish(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: r.ID, Bundle: r.Bundle, Rootfs: r.Rootfs,
		IO: &eventstypes.TaskIO{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal},
	})
	steps.Step("TaskCreate published")
	return &taskAPI.CreateTaskResponse{}, nil
}

// Start runs the init process or an exec.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status != task.Status_CREATED || p.starting {
		s.mu.Unlock()
		return nil, errf(errdefs.ErrFailedPrecondition, "process %q of task %q is %s, not created", r.ExecID, r.ID, statusName(p.status))
	}
	if r.ExecID != "" && s.init.status == task.Status_STOPPED {
		s.mu.Unlock()
		return nil, errf(errdefs.ErrFailedPrecondition, "exec %q: task %q has stopped", r.ExecID, r.ID)
	}
	if s.paused {
		s.mu.Unlock()
		return nil, errf(errdefs.ErrFailedPrecondition, "process %q of task %q: the task is paused", r.ExecID, r.ID)
	}
	// The agent is not asked under the lock: a slow guest must not hold
	// up Kill, State or the other processes.
	p.starting = true
	spec, vm := p.spec, s.vm
	s.mu.Unlock()
	steps := agentvm.NewSteps(s.cfg.Log, "shim: start")
	proc, err := vm.Start(ProcSpec{Process: spec, Stdin: p.io.stdin, Stdout: p.io.stdout, Stderr: p.io.stderr})
	s.mu.Lock()
	defer s.mu.Unlock()
	p.starting = false
	if err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: starting %q of task %q: %w", spec.Args[0], r.ID, err))
	}
	p.proc, p.pid, p.status = proc, proc.Pid(), task.Status_RUNNING
	steps.Step("command started")
	if r.ExecID != "" && s.init.status == task.Status_STOPPED {
		// The init ended while the agent started this exec: reap's sweep
		// did not see it running, so it goes the way the others went.
		proc.Signal(syscall.SIGKILL, true)
	}
	go s.reap(p)
	if r.ExecID == "" {
		s.publish(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: r.ID, Pid: uint32(p.pid)})
	} else {
		s.publish(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: r.ID, ExecID: r.ExecID, Pid: uint32(p.pid)})
	}
	steps.Step("TaskStart published")
	return &taskAPI.StartResponse{Pid: uint32(p.pid)}, nil
}

// reap waits for p to end, closes its streams once its output is
// delivered, records its status and publishes TaskExit.
func (s *Service) reap(p *process) {
	status, err := p.proc.Wait()
	steps := agentvm.NewSteps(s.cfg.Log, "shim: exit")
	p.io.Close()
	steps.Step("stdio closed")
	s.mu.Lock()
	if err != nil {
		if s.vmStopped {
			status = statusVMKilled
		} else {
			status = statusLost
			s.cfg.Log.Warn("shim: lost a process", "task", s.id, "exec", p.execID, "err", err)
		}
	}
	s.stop(p, status)
	steps.Step("TaskExit published")
	var others []*process
	if p.execID == "" {
		for _, e := range s.execs {
			if e.status == task.Status_RUNNING {
				others = append(others, e)
			}
		}
	}
	s.mu.Unlock()
	for _, e := range others {
		e.proc.Signal(syscall.SIGKILL, true)
	}
}

// stop records p's end and publishes TaskExit; s.mu held.
func (s *Service) stop(p *process, status int) {
	p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, status, time.Now()
	close(p.done)
	id := p.execID
	if id == "" {
		id = s.id
	}
	s.publish(runtime.TaskExitEventTopic, &eventstypes.TaskExit{ContainerID: s.id, ID: id, Pid: uint32(p.pid),
		ExitStatus: uint32(status), ExitedAt: protobuf.ToTimestamp(p.exitedAt)})
}

// Wait blocks until the process has ended.
func (s *Service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	s.mu.Lock()
	p, err := s.get(r.ID, r.ExecID)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return nil, errdefs.ToGRPC(ctx.Err())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return &taskAPI.WaitResponse{ExitStatus: uint32(p.exitStatus), ExitedAt: protobuf.ToTimestamp(p.exitedAt)}, nil
}

// Kill signals the process; see the package comment for SIGKILL.
func (s *Service) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	sig := syscall.Signal(r.Signal)
	if sig <= 0 || sig > proto.MaxSignal {
		return nil, errf(errdefs.ErrInvalidArgument, "signal %d", r.Signal)
	}
	if p.starting {
		return nil, errf(errdefs.ErrFailedPrecondition, "process %q of task %q is starting", r.ExecID, r.ID)
	}
	switch p.status {
	case task.Status_CREATED:
		// Never started: it ends as if the signal killed it, and the
		// connections made for it are closed.
		p.io.Close()
		s.stop(p, 128+int(sig))
		return &emptypb.Empty{}, nil
	case task.Status_STOPPED:
		return nil, errf(errdefs.ErrNotFound, "process %q of task %q: already finished", r.ExecID, r.ID)
	}
	if err := p.proc.Signal(sig, r.All); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: signalling task %q: %w", r.ID, err))
	}
	if r.ExecID == "" && r.All {
		for _, e := range s.execs {
			if e.status == task.Status_RUNNING {
				e.proc.Signal(sig, true)
			}
		}
	}
	if r.ExecID == "" && sig == syscall.SIGKILL {
		done, vm := p.done, s.vm
		time.AfterFunc(s.cfg.KillGrace, func() {
			select {
			case <-done:
				return
			default:
			}
			s.mu.Lock()
			s.vmStopped = true
			s.mu.Unlock()
			s.cfg.Log.Warn("shim: the init process outlived SIGKILL; stopping the VM", "task", r.ID, "grace", s.cfg.KillGrace)
			vm.Kill()
		})
	}
	return &emptypb.Empty{}, nil
}

// Exec adds a process to run in the task's VM; Start starts it.
func (s *Service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(r.ID, ""); err != nil {
		return nil, err
	}
	if r.ExecID == "" {
		return nil, errf(errdefs.ErrInvalidArgument, "exec of task %q: no exec id", r.ID)
	}
	if _, ok := s.execs[r.ExecID]; ok {
		return nil, errf(errdefs.ErrAlreadyExists, "exec %q of task %q", r.ExecID, r.ID)
	}
	if s.init.status == task.Status_STOPPED {
		return nil, errf(errdefs.ErrFailedPrecondition, "exec %q: task %q has stopped", r.ExecID, r.ID)
	}
	if r.Spec == nil {
		return nil, errf(errdefs.ErrInvalidArgument, "exec %q of task %q: no process spec", r.ExecID, r.ID)
	}
	// The spec is a specs.Process, which typeurl carries as JSON.
	var sp specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &sp); err != nil {
		return nil, errf(errdefs.ErrInvalidArgument, "exec %q of task %q: process spec: %v", r.ExecID, r.ID, err)
	}
	proc, err := oci.ProcessFrom(&sp)
	if err != nil {
		return nil, errf(errdefs.ErrInvalidArgument, "exec %q of task %q: %v", r.ExecID, r.ID, err)
	}
	proc.Terminal = r.Terminal
	st := stdio{Stdin: r.Stdin, Stdout: r.Stdout, Stderr: r.Stderr, Terminal: r.Terminal}
	pio, err := openIO(st)
	if err != nil {
		return nil, errdefs.ToGRPC(err)
	}
	s.execs[r.ExecID] = &process{execID: r.ExecID, spec: proc, stdio: st, io: pio, status: task.Status_CREATED, done: make(chan struct{})}
	s.publish(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: r.ID, ExecID: r.ExecID})
	return &emptypb.Empty{}, nil
}

// Delete removes an exec that is not running, or the task: its VM,
// inventory entry and rootfs mount.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	s.mu.Lock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	if p.status == task.Status_RUNNING || p.starting {
		s.mu.Unlock()
		return nil, errf(errdefs.ErrFailedPrecondition, "process %q of task %q is running", r.ExecID, r.ID)
	}
	if p.status == task.Status_CREATED {
		// Never started: nothing will reap it.
		p.io.Close()
		p.status, p.exitedAt = task.Status_STOPPED, time.Now()
		close(p.done)
	}
	resp := &taskAPI.DeleteResponse{Pid: uint32(p.pid), ExitStatus: uint32(p.exitStatus), ExitedAt: protobuf.ToTimestamp(p.exitedAt)}
	if r.ExecID != "" {
		delete(s.execs, r.ExecID)
		s.mu.Unlock()
		return resp, nil
	}
	s.deleted = true
	vm, mounted := s.vm, s.mounted
	s.mu.Unlock()

	steps := agentvm.NewSteps(s.cfg.Log, "shim: delete")
	if err := vm.Close(); err != nil {
		s.cfg.Log.Warn("shim: releasing the VM", "task", r.ID, "err", err)
	}
	steps.Step("VM closed")
	if mounted != "" {
		if err := s.cfg.UnmountRootfs(mounted); err != nil {
			s.cfg.Log.Warn("shim: unmounting the rootfs", "task", r.ID, "err", err)
		}
		steps.Step("rootfs unmounted")
	}
	s.publish(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{ContainerID: r.ID, Pid: resp.Pid, ExitStatus: resp.ExitStatus, ExitedAt: resp.ExitedAt})
	steps.Step("TaskDelete published")
	return resp, nil
}

// State reports a process.
func (s *Service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	status := p.status
	if s.paused && status == task.Status_RUNNING {
		status = task.Status_PAUSED
	}
	resp := &taskAPI.StateResponse{ID: r.ID, ExecID: r.ExecID, Bundle: s.bundle, Pid: uint32(p.pid), Status: status,
		Stdin: p.stdio.Stdin, Stdout: p.stdio.Stdout, Stderr: p.stdio.Stderr, Terminal: p.stdio.Terminal,
		ExitStatus: uint32(p.exitStatus)}
	if p.status == task.Status_STOPPED {
		resp.ExitedAt = protobuf.ToTimestamp(p.exitedAt)
	}
	return resp, nil
}

// Pids lists the init process and the running execs (guest pids).
func (s *Service) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(r.ID, ""); err != nil {
		return nil, err
	}
	var ps []*task.ProcessInfo
	for _, p := range append([]*process{s.init}, s.sortedExecs()...) {
		if p.status == task.Status_RUNNING {
			ps = append(ps, &task.ProcessInfo{Pid: uint32(p.pid)})
		}
	}
	return &taskAPI.PidsResponse{Processes: ps}, nil
}

// sortedExecs returns the execs by exec id; s.mu held.
func (s *Service) sortedExecs() []*process {
	out := slices.Collect(maps.Values(s.execs))
	slices.SortFunc(out, func(a, b *process) int { return strings.Compare(a.execID, b.execID) })
	return out
}

// CloseIO closes the process's standard input.
func (s *Service) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if r.Stdin {
		p.io.CloseStdin()
	}
	return &emptypb.Empty{}, nil
}

// ResizePty resizes the process's terminal.
func (s *Service) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, r.ExecID)
	if err != nil {
		return nil, err
	}
	if !p.spec.Terminal {
		return nil, errf(errdefs.ErrFailedPrecondition, "process %q of task %q has no terminal", r.ExecID, r.ID)
	}
	if r.Height > 0xffff || r.Width > 0xffff {
		return nil, errf(errdefs.ErrInvalidArgument, "terminal size %dx%d", r.Height, r.Width)
	}
	switch p.status {
	case task.Status_CREATED:
		p.spec.Rows, p.spec.Cols = uint16(r.Height), uint16(r.Width)
	case task.Status_RUNNING:
		if err := p.proc.Resize(uint16(r.Height), uint16(r.Width)); err != nil {
			return nil, errdefs.ToGRPC(fmt.Errorf("shim: resizing the terminal of task %q: %w", r.ID, err))
		}
	}
	return &emptypb.Empty{}, nil
}

// Connect reports the shim's pid and the init process's (guest) pid.
func (s *Service) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &taskAPI.ConnectResponse{ShimPid: uint32(os.Getpid())}
	if s.init != nil {
		resp.TaskPid = uint32(s.init.pid)
	}
	return resp, nil
}

// Shutdown ends the shim when it has no task left; with Now it stops the
// task's VM first (a VM still booting in Create is cancelled, and torn
// down if it came up, before the shim ends). The queued events are sent
// by the shutdown callback CloseOnShutdown registers, once, however the
// shim is shut down.
func (s *Service) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	busy := s.init != nil && !s.deleted || s.creating
	if busy && !r.Now {
		s.mu.Unlock()
		return &emptypb.Empty{}, nil
	}
	s.shutdown = true
	var vm VM
	if s.init != nil && !s.deleted {
		vm = s.vm
	}
	cancelBoot, createDone := s.cancelBoot, s.createDone
	if !s.creating {
		createDone = nil
	}
	s.mu.Unlock()
	if createDone != nil {
		cancelBoot()
		select {
		case <-createDone:
		case <-time.After(2 * CloseTimeout):
			s.cfg.Log.Warn("shim: the VM Create was booting did not stop in time", "task", r.ID, "timeout", 2*CloseTimeout)
		}
	}
	if vm != nil {
		vm.Kill()
	}
	if !s.cfg.Begun.IsZero() {
		s.cfg.Log.Debug("shim: shutting down", "since_process_begun", time.Since(s.cfg.Begun).Round(time.Millisecond))
	}
	s.cfg.Shutdown()
	return &emptypb.Empty{}, nil
}

// Stats reports the VM's counters as cgroup v2 metrics.
func (s *Service) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	s.mu.Lock()
	if _, err := s.get(r.ID, ""); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	vm := s.vm
	s.mu.Unlock()
	a, err := typeurl.MarshalAny(metrics(vm.Stats()))
	if err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: stats: %w", err))
	}
	return &taskAPI.StatsResponse{Stats: protobuf.FromAny(a)}, nil
}

// Pause freezes the task's VM; see the package comment.
func (s *Service) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.get(r.ID, "")
	if err != nil {
		return nil, err
	}
	if p.status != task.Status_RUNNING || p.starting {
		return nil, errf(errdefs.ErrFailedPrecondition, "pause: task %q is %s, not running", r.ID, statusName(p.status))
	}
	if s.paused {
		return nil, errf(errdefs.ErrFailedPrecondition, "pause: task %q is already paused", r.ID)
	}
	if err := s.vm.Pause(ctx); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: pausing task %q: %w", r.ID, err))
	}
	s.paused = true
	s.publish(runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: r.ID})
	return &emptypb.Empty{}, nil
}

// Resume lets a paused task's VM run on.
func (s *Service) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.get(r.ID, ""); err != nil {
		return nil, err
	}
	if !s.paused {
		return nil, errf(errdefs.ErrFailedPrecondition, "resume: task %q is not paused", r.ID)
	}
	if err := s.vm.Resume(); err != nil {
		return nil, errdefs.ToGRPC(fmt.Errorf("shim: resuming task %q: %w", r.ID, err))
	}
	s.paused = false
	s.publish(runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: r.ID})
	return &emptypb.Empty{}, nil
}

// Checkpoint is not implemented.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return nil, errf(errdefs.ErrNotImplemented, "checkpoint")
}

// Update is not implemented: a VM's size is fixed at boot.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return nil, errf(errdefs.ErrNotImplemented, "update: a VM's vCPUs and memory are fixed at boot")
}

func statusName(st task.Status) string {
	switch st {
	case task.Status_CREATED:
		return "created"
	case task.Status_RUNNING:
		return "running"
	case task.Status_STOPPED:
		return "stopped"
	}
	return st.String()
}
