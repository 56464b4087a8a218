package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/corral-vmm/corral/shim/oci"
)

// VM is the machine a task runs in: the seam between the task service's
// state machine and agentvm, which tests replace with a fake.
type VM interface {
	// Start starts a process in the guest and returns once it runs.
	Start(p ProcSpec) (Proc, error)
	// Close powers the machine off, bounded, and releases it; the
	// inventory entry is removed by then.
	Close() error
	// Kill stops the machine at once (a stuck guest).
	Kill() error
	// Pause freezes the machine (vCPUs and devices) until Resume; ctx
	// bounds the wait for the vCPUs to stop.
	Pause(ctx context.Context) error
	// Resume lets a paused machine run on.
	Resume() error
	// Stats returns the machine's counters.
	Stats() VMStats
}

// VMStats are a task VM's counters for Stats.
type VMStats struct {
	// CPUUsec is the CPU time the VMM process used (vCPUs included), in µs.
	CPUUsec uint64
	// MemoryUsage is the VMM process's resident memory; MemoryLimit the
	// guest's RAM size.
	MemoryUsage, MemoryLimit uint64
}

// Proc is a process running in the guest.
type Proc interface {
	// Pid is the process's pid in the guest.
	Pid() int
	// Wait blocks until the process ends and its output is delivered, and
	// returns its status as a shell reports it (128+n for signal n); an
	// error when the process was lost (the machine ended, the agent hung
	// up).
	Wait() (status int, err error)
	// Signal sends sig to the process, or to its process group.
	Signal(sig syscall.Signal, group bool) error
	// Resize sets its terminal's size.
	Resize(rows, cols uint16) error
}

// ProcSpec is a process to start: what the spec asks for, and its stdio.
type ProcSpec struct {
	oci.Process
	Stdin          io.Reader // nil: empty
	Stdout, Stderr io.Writer // nil: discarded
}

// LaunchRequest is what a Launcher boots.
type LaunchRequest struct {
	// Namespace and ID name the containerd task.
	Namespace, ID string
	Plan          *oci.Plan
	Options       Options
}

// Launcher boots a task's VM; ctx bounds the boot only.
type Launcher func(ctx context.Context, req LaunchRequest) (VM, error)

// errLost is wrapped by a Wait error for a process whose end was not seen.
var errLost = errors.New("process lost")

func lostErr(err error) error { return fmt.Errorf("%w: %w", errLost, err) }
