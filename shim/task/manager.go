package task

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/runtime/v2/shim"
)

// RuntimeName is the runtime type containerd knows the shim by; containerd
// runs the binary containerd-shim-corral-v2 for it.
const RuntimeName = "io.containerd.corral.v2"

// manager is the shim's start and delete bootstrap: `start` starts the
// serving shim and prints its socket address, `delete` cleans up after a
// shim that died.
type manager struct {
	name string
}

// NewManager returns the bootstrap for shim.RunManager.
func NewManager(name string) shim.Manager { return manager{name: name} }

func (m manager) Name() string { return m.name }

// Start starts this binary again as the serving shim for task id, in a
// process group of its own (so containerd's signals to the starter do not
// reach it), listening on a socket derived from containerd's address and
// the id, and returns that address (plain text, which containerd 1.6, 1.7
// and 2.x accept). One shim serves one task: its VM runs in the shim's
// process, so a shim that is killed takes its VM with it.
func (m manager) Start(ctx context.Context, id string, opts shim.StartOpts) (_ string, retErr error) {
	begun := ProcessBegun()
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return "", err
	}
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("shim start: %w", err)
	}
	cwd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("shim start: %w", err)
	}
	args := []string{"-namespace", ns, "-id", id, "-address", opts.Address}
	if opts.Debug {
		args = append(args, "-debug")
	}
	address, err := shim.SocketAddress(ctx, opts.Address, id)
	if err != nil {
		return "", fmt.Errorf("shim start: %w", err)
	}
	socket, err := shim.NewSocket(address)
	if err != nil {
		if !shim.SocketEaddrinuse(err) {
			return "", fmt.Errorf("shim start: socket %s: %w", address, err)
		}
		if shim.CanConnect(address) {
			// A shim for this id already serves: containerd retried.
			if err := shim.WriteAddress("address", address); err != nil {
				return "", fmt.Errorf("shim start: %w", err)
			}
			return address, nil
		}
		if err := shim.RemoveSocket(address); err != nil {
			return "", fmt.Errorf("shim start: removing stale socket %s: %w", address, err)
		}
		if socket, err = shim.NewSocket(address); err != nil {
			return "", fmt.Errorf("shim start: socket %s: %w", address, err)
		}
	}
	defer func() {
		if retErr != nil {
			socket.Close()
			shim.RemoveSocket(address)
		}
	}()
	if err := shim.WriteAddress("address", address); err != nil {
		return "", fmt.Errorf("shim start: %w", err)
	}
	f, err := socket.File()
	if err != nil {
		return "", fmt.Errorf("shim start: %w", err)
	}
	defer f.Close()
	cmd := exec.Command(self, args...)
	cmd.Dir = cwd
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, EnvStartTimes+"=") }),
		EnvStartTimes+"="+startTimes(begun, time.Now()))
	cmd.ExtraFiles = []*os.File{f} // fd 3, which the shim library serves on
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("shim start: %w", err)
	}
	go cmd.Wait()
	// The listener stays open: closing a UnixListener unlinks its socket,
	// which the serving shim listens on (this process exits soon anyway).
	return address, nil
}

// Stop is `shim delete`, which containerd runs in the bundle directory
// when the serving shim is gone: it unmounts the bundle's rootfs and
// removes the inventory entries of this task's VM (its VMM died with the
// shim), and reports the task killed (exit status 137, as runc's shim).
func (m manager) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	ns, err := namespaces.NamespaceRequired(ctx)
	if err != nil {
		return shim.StopStatus{}, err
	}
	bundle, err := os.Getwd()
	if err != nil {
		return shim.StopStatus{}, fmt.Errorf("shim delete: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := mount.UnmountAll(filepath.Join(bundle, "rootfs"), 0); err != nil {
		log.Warn("shim delete: unmounting the rootfs", "err", err)
	}
	if err := collectTask(ns, id, savedStateDir(bundle), ""); err != nil {
		log.Warn("shim delete: removing inventory entries", "err", err)
	}
	return shim.StopStatus{ExitedAt: time.Now(), ExitStatus: 128 + int(syscall.SIGKILL)}, nil
}
