package agent

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Reaper reaps every child of the process, as PID 1 (or a child
// subreaper) must so that orphans do not stay zombies, and hands the
// status of each command the Server started to that command's session:
// one waiter for all, so no status is stolen.
type Reaper struct {
	mu      sync.Mutex
	waits   map[int]chan syscall.WaitStatus
	orphans atomic.Uint64
}

// NewReaper returns a Reaper; call Run to start reaping.
func NewReaper() *Reaper {
	return &Reaper{waits: make(map[int]chan syscall.WaitStatus)}
}

// Run reaps children on every SIGCHLD until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGCHLD)
	defer signal.Stop(ch)
	for {
		r.reap()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// Orphans counts reaped processes no command waited for.
func (r *Reaper) Orphans() uint64 { return r.orphans.Load() }

// reap collects every child that has ended. SIGCHLDs coalesce, so it loops
// until none is left.
func (r *Reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.mu.Lock()
		if ch, ok := r.waits[pid]; ok {
			delete(r.waits, pid)
			ch <- syscall.WaitStatus(ws)
		} else {
			r.orphans.Add(1)
		}
		r.mu.Unlock()
	}
}

// start starts cmd and registers its pid before reap can look the pid up:
// reap takes the lock to dispatch, so a child that ends at once still finds
// its waiter.
func (r *Reaper) start(cmd *exec.Cmd) (<-chan syscall.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	ch := make(chan syscall.WaitStatus, 1)
	r.waits[cmd.Process.Pid] = ch
	return ch, nil
}
