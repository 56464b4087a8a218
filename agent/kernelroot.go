package agent

import (
	"fmt"
	"os"
	"slices"
	"strings"
)

// A kernel root: instead of unpacking the agent from an initramfs, the
// guest kernel mounts a read-only 9p share as / itself (root=TAG
// rootfstype=9p) and runs the agent from it (init=PATH), so the agent's
// pages are read over 9p as they are touched rather than copied whole at
// boot. The agent then makes the same overlay root as from an initramfs,
// with the kernel's 9p mount as its lower layer.

// InitArg is the word after "--" on the kernel command line of a kernel
// root: the kernel gives it to init as an argument, which tells a
// multi-call binary started as PID 1 under its own name (corral) to be
// the agent (agentcmd.Invoked).
const InitArg = "corral-agent"

// KernelRootStaging is where the agent booted on a kernel root mounts the
// tmpfs that holds the overlay's layers: the root's own /tmp directory,
// which the overlay then hides. (The initramfs's StagingDir is not there:
// the root is read-only.)
const KernelRootStaging = "/tmp"

// KernelRootParams are the kernel command-line parameters that mount the
// virtio-9p share tag read-only as the root, with the options of every
// 9p mount of the agent, and run init, an absolute path in that share,
// as the agent. They must come last on the command line: what follows
// "--" is init's. The command line must also carry corral.root=9p:TAG.
func KernelRootParams(tag, init string) []string {
	return []string{
		"root=" + tag, "rootfstype=9p", "rootflags=" + ninepOptions, "ro",
		"init=" + init, "--", InitArg,
	}
}

// rootIs9P reports whether / is a 9p mount (the kernel mounted the root
// itself, KernelRootParams), from /proc/self/mountinfo: statfs cannot
// tell, as 9p reports the server's file system type.
func rootIs9P() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	return err == nil && rootFSType(string(b)) == "9p"
}

// rootFSType returns the file system type of the mount at / in a
// mountinfo file: the last line for /, which is the one on top.
func rootFSType(mountinfo string) string {
	var t string
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		if i := slices.Index(f, "-"); i > 5 && i+1 < len(f) {
			t = f[i+1]
		}
	}
	return t
}

// readCmdline reads and parses the kernel command line; /proc must be
// mounted.
func (s *setup) readCmdline() (BootConfig, error) {
	b, err := s.sys.ReadFile("/proc/cmdline")
	if err != nil {
		return BootConfig{}, fmt.Errorf("reading the kernel command line: %w", err)
	}
	return ParseCmdline(string(b))
}

// initKernelRoot is Init on a kernel root, after /proc (procMounts: its
// mount, unless that failed) was mounted on the root's own /proc
// directory: a tmpfs on the root's /tmp holds the overlay's layers, with
// the root itself bound as the lower one; the switch takes /proc along,
// and the other base file systems (rest) are mounted in the new root.
func (s *setup) initKernelRoot(procMounts []mount, rest []mount) {
	cfg, err := s.readCmdline()
	if err != nil {
		s.fail(err)
		return
	}
	if cfg.Root.Kind != Root9P || cfg.Root.Writable || cfg.Deferred {
		asked := RootPrefix + cfg.Root.String()
		if cfg.Deferred {
			asked += " with " + SetupPrefix + SetupDeferred
		}
		s.fail(fmt.Errorf("the kernel mounted a 9p root, but the command line asks for %s: a kernel root must be a read-only 9p share set up at boot", asked))
		return
	}
	s.kernelRoot = true
	if err := s.mount(mount{source: "tmpfs", target: s.staging, fstype: "tmpfs", data: "mode=0700", mode: 0o700, what: "the root switch's staging tmpfs"}); err != nil {
		s.fail(err)
		return
	}
	if err := s.switchRoot(cfg.Root, procMounts); err != nil {
		s.fail(err)
		return
	}
	s.done("agent: switched root", "root", cfg.Root.String(), "lower", "the kernel's root")
	s.baseMounts(rest)
	cfg.Root = Root{}
	s.apply(cfg, nil)
}
