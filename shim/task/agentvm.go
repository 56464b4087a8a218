package task

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/identifiers"
	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agentvm"
	"github.com/corral-vmm/corral/internal/gomaxprocs"
	"github.com/corral-vmm/corral/inventory"
)

// CloseTimeout bounds the power-off through the agent in Delete; the
// machine is stopped when it passes.
const CloseTimeout = 5 * time.Second

// machineName is the inventory name of task ns/id: "containerd-NS-ID",
// or, when that is longer than inventory.MaxNameLen, its start, '-' and
// 16 hex digits of the SHA-256 of the whole: deterministic, and two long
// ids that differ only past the cut get different names. ns and id must
// be containerd identifiers ([A-Za-z0-9] with single [._-] between,
// at most 76 bytes), which containerd itself requires of them.
func machineName(ns, id string) (string, error) {
	if err := identifiers.Validate(ns); err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	if err := identifiers.Validate(id); err != nil {
		return "", fmt.Errorf("task id: %w", err)
	}
	n := "containerd-" + ns + "-" + id
	if len(n) > inventory.MaxNameLen {
		const hashLen = 16
		sum := sha256.Sum256([]byte(n))
		n = n[:inventory.MaxNameLen-1-hashLen] + "-" + hex.EncodeToString(sum[:])[:hashLen]
	}
	if err := inventory.ValidateName(n); err != nil {
		return "", fmt.Errorf("shim: machine name: %w", err)
	}
	return n, nil
}

// warmVersion is the shim's part of the warm cache key (the cache also
// keys on this executable's identity).
const warmVersion = "containerd-shim-corral-v2"

// AgentLauncher boots a task's VM with agentvm, with its console going to
// console and its logs to log: warm (agentvm.StartWarm, restoring a
// snapshot of a booted kernel and agent) unless Options.Cold is set or no
// cache directory can be found, which boots cold.
func AgentLauncher(log *slog.Logger, console io.Writer) Launcher {
	return func(ctx context.Context, req LaunchRequest) (VM, error) {
		name, err := machineName(req.Namespace, req.ID)
		if err != nil {
			return nil, err
		}
		mc := corral.Config{
			Name:     name,
			Labels:   map[string]string{LabelNamespace: req.Namespace, LabelID: req.ID},
			StateDir: req.Options.StateDir,
			Kernel:   req.Options.Kernel,
			Cmdline:  req.Options.cmdline(),
			Console:  console,
			Logger:   log,
		}
		cfg := req.Plan.AgentConfig(mc, req.Options.Agent)
		var vm *agentvm.VM
		if dir, ok := warmDir(req.Options, log); ok {
			vm, err = agentvm.StartWarm(ctx, cfg, agentvm.Warm{Dir: dir, Version: warmVersion})
		} else {
			vm, err = agentvm.Start(ctx, cfg)
		}
		if err != nil {
			return nil, err
		}
		gomaxprocs.Reserve(vm.Machine().Config().CPUs) // the shim process serves this VM
		return &agentVM{vm: vm, ns: req.Namespace, id: req.ID, stateDir: req.Options.StateDir, log: log}, nil
	}
}

// warmDir is the snapshot cache to use, if any.
func warmDir(o Options, log *slog.Logger) (string, bool) {
	if o.Cold {
		return "", false
	}
	if o.WarmDir != "" {
		return o.WarmDir, true
	}
	d, err := agentvm.DefaultWarmDir()
	if err != nil {
		log.Info("shim: booting cold", "err", err)
		return "", false
	}
	return d, true
}

// agentVM is a VM on agentvm.
type agentVM struct {
	vm       *agentvm.VM
	ns, id   string
	stateDir string
	log      *slog.Logger
}

func (v *agentVM) Start(p ProcSpec) (Proc, error) {
	cmd := v.vm.Command(p.Args[0], p.Args[1:]...)
	cmd.Args = p.Args
	cmd.Env = p.Env
	cmd.Dir = p.Cwd
	cmd.Credential = &client.Credential{UID: p.UID, GID: p.GID}
	cmd.TTY, cmd.Rows, cmd.Cols = p.Terminal, p.Rows, p.Cols
	if p.Stdin != nil {
		cmd.Stdin = p.Stdin
	}
	if p.Stdout != nil {
		cmd.Stdout = p.Stdout
	}
	if p.Stderr != nil {
		cmd.Stderr = p.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return agentProc{cmd}, nil
}

// Close powers the machine off through the agent, stops it when that
// takes longer than CloseTimeout, and removes its inventory entry.
func (v *agentVM) Close() error {
	steps := agentvm.NewSteps(v.log, "shim: vm close")
	done := make(chan error, 1)
	go func() { done <- v.vm.Close() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(CloseTimeout):
		v.log.Warn("shim: the VM did not power off in time; stopping it", "timeout", CloseTimeout)
		v.vm.Machine().Stop()
		err = <-done
	}
	steps.Step("powered off")
	if cerr := collectTask(v.ns, v.id, v.stateDir, v.vm.Machine().ID()); cerr != nil {
		err = errors.Join(err, fmt.Errorf("shim: removing the inventory entry: %w", cerr))
	}
	steps.Step("inventory entry removed")
	return err
}

func (v *agentVM) Kill() error { v.vm.Machine().Stop(); return nil }

func (v *agentVM) Pause(ctx context.Context) error { return v.vm.Machine().Pause(ctx) }

func (v *agentVM) Resume() error { return v.vm.Machine().Resume() }

// Stats: the VMM runs in this process, one VM per shim, so the process's
// CPU time (vCPU threads included) and resident memory are the VM's.
func (v *agentVM) Stats() VMStats {
	var st VMStats
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		st.CPUUsec = uint64(ru.Utime.Nano()/1000 + ru.Stime.Nano()/1000)
	}
	st.MemoryUsage = residentBytes()
	st.MemoryLimit = v.vm.Machine().Config().Memory
	if st.MemoryLimit == 0 {
		st.MemoryLimit = corral.DefaultMemory
	}
	return st
}

// residentBytes reads this process's resident set from /proc/self/statm.
func residentBytes() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}

// agentProc is a Proc on a client.Cmd.
type agentProc struct{ cmd *client.Cmd }

func (p agentProc) Pid() int { return p.cmd.Pid() }

func (p agentProc) Wait() (int, error) {
	err := p.cmd.Wait()
	var ee *client.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		return ee.ShellStatus(), nil
	}
	return 0, lostErr(err)
}

func (p agentProc) Signal(sig syscall.Signal, group bool) error {
	if group {
		return p.cmd.SignalGroup(sig)
	}
	return p.cmd.Signal(sig)
}

func (p agentProc) Resize(rows, cols uint16) error { return p.cmd.Resize(rows, cols) }
