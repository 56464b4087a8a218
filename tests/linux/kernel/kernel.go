// Package kernel finds, and on request builds, the Linux test kernels made by
// tests/linux/build-kernel.sh, and holds the command lines to boot them with.
package kernel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrNotBuilt is returned by Find when the requested kernel is not in the cache.
var ErrNotBuilt = errors.New("kernel: test kernel not built (run tests/linux/build-kernel.sh)")

// exitNotBuilt is build-kernel.sh's exit status for --lookup of a missing kernel.
const exitNotBuilt = 3

// Kernel command lines. The patched kernel is for hosts whose nested KVM
// emulates guest ring 0 and refuses some instructions there
// (docs/nested-kvm.md); on hardware KVM the plain kernel boots with the
// plain line. Choose picks between them.
const (
	// CmdlinePlain boots the plain kernel on hardware KVM.
	CmdlinePlain = "console=ttyS0 panic=-1"
	// CmdlineNested boots the patched kernel on the nested KVM: no XSAVE, no
	// features whose instructions the emulator refuses in ring 0, and no
	// ERMS/FSRM, whose REP MOVSB/STOSB the emulator steps through a byte at
	// a time (a page fault's clear_page cost twice what REP STOSQ does),
	// and a periodic LAPIC tick: a one-shot tick costs an exit and an
	// emulated reprogramming every tick, and each high-resolution timer
	// its own interrupt.
	CmdlineNested = CmdlinePlain + " noxsave mitigations=off clearcpuid=popcnt,cx16,rdtscp,rdpid,umip,smap,smep,fsgsbase,pku,erms,fsrm highres=off nohz=off lapic=notscdeadline"
)

// Cmdline returns CmdlineNested for the patched kernel and CmdlinePlain otherwise.
func Cmdline(patched bool) string {
	if patched {
		return CmdlineNested
	}
	return CmdlinePlain
}

// Script returns the path of build-kernel.sh in this source tree.
func Script() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("kernel: cannot locate the source tree (runtime.Caller failed)")
	}
	p := filepath.Join(filepath.Dir(file), "..", "build-kernel.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("kernel: build script: %w", err)
	}
	return p, nil
}

func scriptArgs(script string, patched bool, extra ...string) []string {
	args := []string{script}
	args = append(args, extra...)
	if !patched {
		args = append(args, "--no-patches")
	}
	return args
}

// Find returns the cached bzImage and vmlinux of the patched (nested-KVM)
// or plain test kernel. It only looks in the cache ($CORRAL_CACHE, default
// ~/.cache/corral) and returns ErrNotBuilt when the kernel is not there.
func Find(patched bool) (bzImage, vmlinux string, err error) {
	script, err := Script()
	if err != nil {
		return "", "", err
	}
	cmd := exec.Command("bash", scriptArgs(script, patched, "--lookup")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() == exitNotBuilt {
			return "", "", fmt.Errorf("%w: %s", ErrNotBuilt, strings.TrimSpace(stderr.String()))
		}
		return "", "", fmt.Errorf("kernel: %s --lookup: %w: %s", script, err, strings.TrimSpace(stderr.String()))
	}
	return parsePaths(stdout.Bytes())
}

// Build runs build-kernel.sh, which installs missing Debian packages and
// builds the kernel unless it is cached (minutes on two cores), and returns
// the paths. The script's progress goes to log (nil discards it).
func Build(ctx context.Context, patched bool, log io.Writer) (bzImage, vmlinux string, err error) {
	script, err := Script()
	if err != nil {
		return "", "", err
	}
	if log == nil {
		log = io.Discard
	}
	cmd := exec.CommandContext(ctx, "bash", scriptArgs(script, patched)...)
	var stdout bytes.Buffer
	cmd.Stdout = io.MultiWriter(&stdout, log)
	cmd.Stderr = log
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("kernel: %s: %w", script, err)
	}
	return parsePaths(stdout.Bytes())
}

// parsePaths reads the "bzImage=" and "vmlinux=" lines of the script's output
// and checks that both files exist.
func parsePaths(out []byte) (bzImage, vmlinux string, err error) {
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "bzImage="); ok {
			bzImage = v
		}
		if v, ok := strings.CutPrefix(line, "vmlinux="); ok {
			vmlinux = v
		}
	}
	if bzImage == "" || vmlinux == "" {
		return "", "", fmt.Errorf("kernel: build script printed no bzImage=/vmlinux= lines: %q", out)
	}
	for _, p := range []string{bzImage, vmlinux} {
		if _, err := os.Stat(p); err != nil {
			return "", "", fmt.Errorf("kernel: build script named a missing file: %w", err)
		}
	}
	return bzImage, vmlinux, nil
}
