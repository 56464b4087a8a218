package corraltest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/internal/testenv/require"
	"github.com/corral-vmm/corral/kvm"
)

// Environment variables StartT reads.
const (
	// KernelEnv names the guest kernel when Config.Machine.Kernel is empty.
	KernelEnv = "CORRAL_KERNEL"
	// AgentEnv names a static agent binary when Config.Agent is empty.
	AgentEnv = "CORRAL_AGENT"
	// RequireEnv lists what a run requires, comma-separated: with "kvm"
	// in it a test fails where KVM is missing instead of skipping.
	RequireEnv = require.Env
)

// buildAgentTimeout bounds building the agent (go build, cached).
const buildAgentTimeout = 5 * time.Minute

// mustHaveKVM opens the KVM device as a machine will. Where it cannot be
// opened the test skips, or fails when $CORRAL_REQUIRE names kvm; any other
// error (a capability missing) fails it: KVM is there and unusable.
func mustHaveKVM(t testing.TB, path string) {
	t.Helper()
	if path == "" {
		path = kvm.DevicePath
	}
	s, err := kvm.Open(path)
	if errors.Is(err, kvm.ErrUnavailable) {
		require.Missing(t, require.KVM, "corraltest: needs %s: %v", path, err)
	}
	if err != nil {
		t.Fatalf("corraltest: KVM is present but Corral cannot use it: %v", err)
	}
	s.Close()
}

// kernelPath returns the kernel to boot: configured, else $CORRAL_KERNEL.
// With neither the test skips (there is no kernel to test with), or fails
// when $CORRAL_REQUIRE names kernel; a named kernel that is not there
// fails it.
func kernelPath(t testing.TB, configured string) string {
	t.Helper()
	p, from := configured, "Config.Machine.Kernel"
	if p == "" {
		p, from = os.Getenv(KernelEnv), "$"+KernelEnv
	}
	if p == "" {
		require.Missing(t, require.Kernel, "corraltest: no guest kernel: set Config.Machine.Kernel or $%s (Corral's tests/linux/build-kernel.sh builds one with what the agent needs)", KernelEnv)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("corraltest: kernel from %s: %v", from, err)
	}
	return p
}

// agentPath returns the static agent to put in the guest: configured, else
// $CORRAL_AGENT, else one built with agent/initrd.BuildAgent into the user
// cache directory (this needs the go command and a module that requires
// corral, as a test of such a module has).
func agentPath(t testing.TB, configured string) string {
	t.Helper()
	p, from := configured, "Config.Agent"
	if p == "" {
		p, from = os.Getenv(AgentEnv), "$"+AgentEnv
	}
	if p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("corraltest: agent from %s: %v", from, err)
		}
		return p
	}
	dir, err := agentCacheDir()
	if err != nil {
		t.Fatalf("corraltest: no agent (set Config.Agent or $%s): %v", AgentEnv, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildAgentTimeout)
	defer cancel()
	p, err = cachedAgent(ctx, dir)
	if err != nil {
		t.Fatalf("corraltest: no agent (set Config.Agent or $%s): %v", AgentEnv, err)
	}
	return p
}

// agentCacheDir is $CORRAL_CACHE/corraltest, else <user cache>/corral/corraltest.
func agentCacheDir() (string, error) {
	if d := os.Getenv("CORRAL_CACHE"); d != "" {
		return filepath.Join(d, "corraltest"), nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("agent cache: %w", err)
	}
	return filepath.Join(d, "corral", "corraltest"), nil
}

// cachedAgent builds the agent into dir, once per test binary: parallel
// tests wait on a lock in dir, and an agent newer than the running test
// binary (which go test links afresh when the sources change) is reused.
func cachedAgent(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("agent cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", fmt.Errorf("agent cache: %w", err)
	}
	defer lock.Close()
	for {
		err = unix.Flock(int(lock.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return "", fmt.Errorf("agent cache: flock: %w", err)
	}
	out := filepath.Join(dir, "corral-agent")
	if fresh(out) {
		return out, nil
	}
	return initrd.BuildAgent(ctx, dir)
}

// fresh reports whether the agent at p is newer than this test binary.
func fresh(p string) bool {
	agent, err := os.Stat(p)
	if err != nil {
		return false
	}
	exe, err := os.Stat("/proc/self/exe")
	return err == nil && !agent.ModTime().Before(exe.ModTime())
}
