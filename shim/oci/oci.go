// Package oci translates an OCI runtime bundle (config.json and its root
// file system) into what Corral runs: the machine's size, its root, the
// shares and tmpfs mounts the agent makes, the hostname, and the process
// the agent starts. It only reads and checks; nothing here needs KVM.
//
// What a VM honours of the spec:
//   - root: the bundle's root directory is the guest's / over virtio-9p,
//     read-write (writes land in the snapshot), or read-only under a tmpfs
//     overlay when root.readonly is set.
//   - process: args, env, cwd, user uid/gid, terminal and console size.
//     Additional groups, capabilities, rlimits, seccomp and AppArmor are
//     not applied: the VM is the isolation boundary.
//   - hostname.
//   - mounts: tmpfs mounts become fresh tmpfs in the guest; bind mounts of
//     host directories become virtio-9p shares (read-only with "ro"); the
//     kernel file systems (proc, sysfs, devpts, mqueue, cgroup) and all of
//     /dev (with its shm tmpfs) are the agent's own; bind mounts of files
//     and other types are skipped and listed in Plan.Skipped, and so is a
//     mount hidden by a later one at the same destination.
//     Every destination must be absolute, and a tmpfs or share one a path
//     the agent can be told of (agentvm.CheckGuestPath), other than /;
//     Translate refuses the spec otherwise, so Create fails before a boot.
//   - linux.resources: vCPUs = ceil(cpu.quota / cpu.period), else
//     DefaultCPUs; memory = memory.limit rounded up to a MiB, at least
//     MinMemory, else DefaultMemory.
//   - linux.namespaces of type network with a path: not plumbed; the guest
//     has no network (Plan.NetNS records the path).
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agentvm"
)

// Sizes of a task's VM.
const (
	// DefaultCPUs is the vCPU count without a CPU quota.
	DefaultCPUs = 1
	// DefaultMemory is guest RAM without a memory limit.
	DefaultMemory = 256 << 20
	// MinMemory is the least guest RAM given: a smaller limit still has to
	// hold the guest kernel and the agent.
	MinMemory = 128 << 20
	// MaxCPUs bounds the vCPU count a quota asks for (Corral's limit).
	MaxCPUs = corral.MaxCPUs
)

// ConfigFile is the spec's name in a bundle.
const ConfigFile = "config.json"

// ErrSpec is wrapped by every error about a spec the shim cannot run.
var ErrSpec = errors.New("oci: unusable spec")

// Process is what the agent runs.
type Process struct {
	Args []string
	Env  []string
	// Cwd is the working directory in the guest (absolute).
	Cwd      string
	UID, GID uint32
	// Terminal runs the process on a pseudo-terminal of Rows x Cols
	// (0 x 0: the agent's default).
	Terminal   bool
	Rows, Cols uint16
}

// Plan is a bundle translated: the VM to boot and the process to run.
type Plan struct {
	// RootDir is the host directory that is the guest's root.
	RootDir string
	// ReadOnlyRoot keeps writes off RootDir (a tmpfs overlay takes them).
	ReadOnlyRoot bool
	Hostname     string
	// Tmpfs are guest paths that get a fresh tmpfs.
	Tmpfs []string
	// Shares are the host directories bind-mounted into the container.
	Shares []agentvm.Share
	CPUs   int
	Memory uint64
	// NetNS is the spec's network namespace path, if any: not plumbed
	// into the VM yet.
	NetNS   string
	Process Process
	// Skipped describes the mounts a VM does not make, for the log.
	Skipped []string
}

// Load reads bundle/config.json.
func Load(bundle string) (*specs.Spec, error) {
	b, err := os.ReadFile(filepath.Join(bundle, ConfigFile))
	if err != nil {
		return nil, fmt.Errorf("oci: %w", err)
	}
	return Parse(b)
}

// Parse decodes a config.json.
func Parse(b []byte) (*specs.Spec, error) {
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrSpec, err)
	}
	return &s, nil
}

// Translate checks spec and turns it into a Plan; bundle is the directory
// a relative root.path is in.
func Translate(spec *specs.Spec, bundle string) (*Plan, error) {
	if spec.Root == nil || spec.Root.Path == "" {
		return nil, fmt.Errorf("%w: no root.path", ErrSpec)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("%w: no process", ErrSpec)
	}
	root := spec.Root.Path
	if !filepath.IsAbs(root) {
		root = filepath.Join(bundle, root)
	}
	proc, err := ProcessFrom(spec.Process)
	if err != nil {
		return nil, err
	}
	p := &Plan{RootDir: root, ReadOnlyRoot: spec.Root.Readonly, Hostname: spec.Hostname, Process: proc,
		CPUs: DefaultCPUs, Memory: DefaultMemory}
	if err := checkHostname(spec.Hostname); err != nil {
		return nil, err
	}
	// A later mount at the same destination hides an earlier one, as in
	// runc: CRI's sandbox spec has both a tmpfs and a bind at /dev/shm.
	// Every destination must be absolute, hidden or not.
	last := make(map[string]int, len(spec.Mounts))
	for i, m := range spec.Mounts {
		if !filepath.IsAbs(m.Destination) {
			return nil, fmt.Errorf("%w: mounts[%d]: destination %q is not absolute", ErrSpec, i, m.Destination)
		}
		last[filepath.Clean(m.Destination)] = i
	}
	for i, m := range spec.Mounts {
		if j := last[filepath.Clean(m.Destination)]; j != i {
			p.Skipped = append(p.Skipped, fmt.Sprintf("%s (%s): hidden by mounts[%d]", filepath.Clean(m.Destination), m.Type, j))
			continue
		}
		if err := p.addMount(i, m); err != nil {
			return nil, err
		}
	}
	if l := spec.Linux; l != nil {
		for _, ns := range l.Namespaces {
			if ns.Type == specs.NetworkNamespace && ns.Path != "" {
				p.NetNS = ns.Path
			}
		}
		if r := l.Resources; r != nil {
			if err := p.size(r); err != nil {
				return nil, err
			}
		}
	}
	return p, nil
}

// ProcessFrom checks an OCI process (the task's, or an exec's).
func ProcessFrom(sp *specs.Process) (Process, error) {
	if len(sp.Args) == 0 || sp.Args[0] == "" {
		return Process{}, fmt.Errorf("%w: process.args is empty", ErrSpec)
	}
	if sp.CommandLine != "" {
		return Process{}, fmt.Errorf("%w: process.commandLine is for Windows; give process.args", ErrSpec)
	}
	cwd := sp.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return Process{}, fmt.Errorf("%w: process.cwd %q is not absolute", ErrSpec, sp.Cwd)
	}
	for _, e := range sp.Env {
		if !strings.Contains(e, "=") {
			return Process{}, fmt.Errorf("%w: process.env entry %q is not KEY=VALUE", ErrSpec, e)
		}
	}
	p := Process{Args: slices.Clone(sp.Args), Env: slices.Clone(sp.Env), Cwd: cwd,
		UID: sp.User.UID, GID: sp.User.GID, Terminal: sp.Terminal}
	if sp.ConsoleSize != nil {
		if sp.ConsoleSize.Height > 0xffff || sp.ConsoleSize.Width > 0xffff {
			return Process{}, fmt.Errorf("%w: process.consoleSize %dx%d is too large", ErrSpec, sp.ConsoleSize.Height, sp.ConsoleSize.Width)
		}
		p.Rows, p.Cols = uint16(sp.ConsoleSize.Height), uint16(sp.ConsoleSize.Width)
	}
	return p, nil
}

// checkHostname accepts what the agent can set (agent.CheckHostname).
func checkHostname(h string) error {
	if h == "" {
		return nil
	}
	if err := agent.CheckHostname(h); err != nil {
		return fmt.Errorf("%w: hostname: %v", ErrSpec, err)
	}
	return nil
}

// agentFS are the file systems the agent mounts itself as PID 1.
var agentFS = map[string]bool{"proc": true, "sysfs": true, "devpts": true, "mqueue": true, "cgroup": true, "cgroup2": true}

// addMount takes mount i (its destination absolute), or records why it
// is skipped.
func (p *Plan) addMount(i int, m specs.Mount) error {
	dst := filepath.Clean(m.Destination)
	skip := func(why string) error {
		p.Skipped = append(p.Skipped, fmt.Sprintf("%s (%s): %s", dst, m.Type, why))
		return nil
	}
	// A mount the agent makes must be one it can be told of: checked here
	// with agentvm's own rule, so a bad spec fails Create, not the boot.
	guestPath := func() error {
		if err := agentvm.CheckGuestPath(dst); err != nil {
			return fmt.Errorf("%w: mounts[%d]: destination: %v", ErrSpec, i, err)
		}
		if dst == "/" {
			return fmt.Errorf("%w: mounts[%d] (%s): destination / is the container's root (root.path)", ErrSpec, i, m.Type)
		}
		return nil
	}
	bind := m.Type == "bind" || slices.Contains(m.Options, "bind") || slices.Contains(m.Options, "rbind")
	switch {
	case agentFS[m.Type]:
		return skip("the agent mounts it")
	case dst == "/dev" || dst == "/proc" || dst == "/sys" || strings.HasPrefix(dst, "/dev/") || strings.HasPrefix(dst, "/proc/") || strings.HasPrefix(dst, "/sys/"):
		return skip("the agent's")
	case m.Type == "tmpfs":
		if err := guestPath(); err != nil {
			return err
		}
		p.Tmpfs = append(p.Tmpfs, dst)
		return nil
	case bind:
		if !filepath.IsAbs(m.Source) {
			return fmt.Errorf("%w: mounts[%d] (%s): bind source %q is not absolute", ErrSpec, i, dst, m.Source)
		}
		st, err := os.Stat(m.Source)
		if err != nil {
			return fmt.Errorf("%w: mounts[%d] (%s): %v", ErrSpec, i, dst, err)
		}
		if !st.IsDir() {
			return skip("a bind mount of a file cannot be shared over 9p")
		}
		if err := guestPath(); err != nil {
			return err
		}
		p.Shares = append(p.Shares, agentvm.Share{Host: m.Source, Guest: dst, ReadOnly: slices.Contains(m.Options, "ro")})
		return nil
	}
	return skip("not supported in a VM")
}

// size takes the VM's size from the resources.
func (p *Plan) size(r *specs.LinuxResources) error {
	if c := r.CPU; c != nil && c.Quota != nil && *c.Quota > 0 {
		period := uint64(100000) // the kernel's default CFS period
		if c.Period != nil && *c.Period > 0 {
			period = *c.Period
		}
		q := uint64(*c.Quota)
		n := q / period
		if q%period != 0 {
			n++
		}
		if n > MaxCPUs {
			return fmt.Errorf("%w: linux.resources.cpu: quota %d / period %d asks for %d vCPUs, more than %d", ErrSpec, *c.Quota, period, n, MaxCPUs)
		}
		p.CPUs = int(n)
	}
	if m := r.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		const mib = 1 << 20
		lim := (uint64(*m.Limit) + mib - 1) / mib * mib
		if lim > corral.MaxMemory {
			return fmt.Errorf("%w: linux.resources.memory: limit %d is more than a VM's %d", ErrSpec, *m.Limit, uint64(corral.MaxMemory))
		}
		p.Memory = max(lim, MinMemory)
	}
	return nil
}
