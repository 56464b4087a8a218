package agentvm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
)

// DefaultAgentTimeout bounds the wait for the agent when
// Config.AgentTimeout is zero. It is generous: under nested or emulated
// KVM a Linux boot takes minutes.
const DefaultAgentTimeout = 3 * time.Minute

// AgentEnv names the environment variable holding the agent's path when
// Config.Agent is empty.
const AgentEnv = "CORRAL_AGENT"

// Mount tags agentvm gives its own 9p shares; a Config.Machine.Shares tag
// may not start with TagPrefix.
const (
	TagPrefix = "corral-"
	rootTag   = TagPrefix + "root"
)

// Command-line keys the agent reads as PID 1 (see agent).
const (
	rootKey  = agent.RootPrefix
	shareKey = agent.SharePrefix
)

// RootDisk is the guest device of a RootImage: agentvm puts the image
// first on the PCI bus, so it is the first virtio-blk disk.
const RootDisk = "/dev/vda"

// ErrConfig is wrapped by errors in a Config that agentvm finds before it
// creates anything (a bad share, a missing agent); corral.ErrConfig is
// wrapped by those corral's own Validate finds.
var ErrConfig = errors.New("agentvm: invalid configuration")

type rootKind int

const (
	rootInitrd rootKind = iota
	rootHost
	rootDir
	rootImage
	rootDirRW
)

// Root is what the guest sees as /. The zero value is RootInitrd.
type Root struct {
	kind rootKind
	path string
}

// writable reports whether the root's share is the guest's root,
// read-write, with no overlay.
func (r Root) writable() bool { return r.kind == rootDirRW }

// RootInitrd keeps the initramfs as the root: the agent, the user's
// initrd (Config.Machine.Initrd) if any, and the mounts PID 1 makes.
func RootInitrd() Root { return Root{} }

// RootHost is the host's / served read-only over 9p, with a tmpfs
// overlay on top so the guest can write (its writes never reach the host).
// The 9p server runs in this process, with this process's rights.
func RootHost() Root { return Root{kind: rootHost, path: "/"} }

// RootDir is the host directory dir (an unpacked image, say) served
// read-only over 9p, under a tmpfs overlay.
func RootDir(dir string) Root { return Root{kind: rootDir, path: dir} }

// RootDirRW is the host directory dir served read-write over 9p as the
// guest's root itself, with no overlay: the guest's writes land in dir
// (a container's bundle rootfs, say). The 9p server runs in this
// process, with this process's rights.
func RootDirRW(dir string) Root { return Root{kind: rootDirRW, path: dir} }

// RootImage is an ext4 image on a read-only virtio-blk disk (RootDisk),
// under a tmpfs overlay.
func RootImage(path string) Root { return Root{kind: rootImage, path: path} }

// String describes the root for messages.
func (r Root) String() string {
	switch r.kind {
	case rootHost:
		return "the host's / (read-only, tmpfs overlay)"
	case rootDir:
		return fmt.Sprintf("directory %s (read-only, tmpfs overlay)", r.path)
	case rootDirRW:
		return fmt.Sprintf("directory %s (read-write)", r.path)
	case rootImage:
		return fmt.Sprintf("image %s (read-only, tmpfs overlay)", r.path)
	}
	return "the initramfs"
}

// Share is a host directory mounted in the guest over virtio-9p.
type Share struct {
	// Host is the host directory.
	Host string
	// Guest is where the guest mounts it (absolute; no spaces, quotes or
	// ':'); empty means the same path as Host.
	Guest string
	// ReadOnly refuses every change the guest asks for.
	ReadOnly bool
}

// Config describes a machine to run the agent in.
type Config struct {
	// Machine is the machine: kernel, command line, CPUs, memory, disks,
	// NICs, console. Its Initrd, if any, is kept and the agent's archive
	// appended; a vsock device is added when Vsock is nil; agentvm's shares
	// are appended to Shares, its keys to Cmdline, and a RootImage disk is
	// put before Disks. Console receives the guest's console as it comes.
	Machine corral.Config
	// Agent is the path of a static corral-agent, or of a static corral
	// binary (which is the agent when it runs as PID 1); "" means
	// $CORRAL_AGENT.
	Agent string
	// Root is the guest's /; the zero value keeps the initramfs.
	Root Root
	// Shares are host directories to mount in the guest.
	Shares []Share
	// Hostname, if set, is the guest's host name, set by the agent during
	// its setup: dot-separated RFC 1123 labels, at most 64 bytes
	// (agent.CheckHostname).
	Hostname string
	// Tmpfs are absolute guest paths where the agent mounts a fresh tmpfs
	// (mode 1777, nosuid, nodev) in the final root, creating the
	// directory first; the path rules of Share.Guest apply.
	Tmpfs []string
	// AgentTimeout bounds the wait for the agent to answer after the
	// machine starts; 0 means DefaultAgentTimeout.
	AgentTimeout time.Duration
	// Confine, if set, is called once the machine is created (its
	// kernel, initrd and disks read or open, its shares open) and before
	// its vCPUs run, with the machine's final configuration, whose Initrd
	// is empty (it is in guest memory by then): corral exec confines the
	// process there (package sandbox). An error stops the machine, and
	// Start returns it.
	Confine func(mc *corral.Config) error
}

// FindAgent returns the agent path cfg names: Agent, else $CORRAL_AGENT,
// else an error that says how to get one.
func (cfg *Config) FindAgent() (string, error) {
	p := cfg.Agent
	if p == "" {
		p = os.Getenv(AgentEnv)
	}
	if p == "" {
		return "", fmt.Errorf("%w: no agent: set Config.Agent or $%s to a static corral-agent (CGO_ENABLED=0 go build ./cmd/corral-agent) or a static corral binary", ErrConfig, AgentEnv)
	}
	return p, nil
}

// kernelRootInit reports whether cfg's guest can boot on a kernel root
// (agent.KernelRootParams: the kernel mounts the host's / over 9p and runs
// the agent from it, nothing copied into an initramfs) and returns the
// agent's path there. That needs the host's root, no initrd of the
// user's, no "--" of the user's on the command line (what follows is
// init's), and an executable agent at a path the command line can carry
// and the guest sees as the host does (not under /proc, /sys or /dev).
// Otherwise the agent goes into an initramfs, as for every other root.
func (cfg *Config) kernelRootInit(agentPath string) (string, bool) {
	if cfg.Root.kind != rootHost || cfg.Machine.Initrd != "" || slices.Contains(strings.Fields(cfg.Machine.Cmdline), "--") {
		return "", false
	}
	p, err := filepath.Abs(agentPath)
	if err != nil {
		return "", false
	}
	if p, err = filepath.EvalSymlinks(p); err != nil || CheckGuestPath(p) != nil {
		return "", false
	}
	if _, under := agent.Covering(p, kernelDirs()); under {
		return "", false
	}
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return "", false
	}
	return p, true
}

// machineConfig returns the machine configuration with the root, the
// shares, the vsock device and the command-line keys added; the caller
// sets Initrd and Console. cfg.Machine is not modified.
func (cfg *Config) machineConfig() (corral.Config, error) {
	mc := cfg.Machine
	mc.Shares = append([]corral.Share(nil), cfg.Machine.Shares...)
	mc.Disks = append([]corral.Disk(nil), cfg.Machine.Disks...)
	for _, s := range mc.Shares {
		if strings.HasPrefix(s.Tag, TagPrefix) {
			return corral.Config{}, fmt.Errorf("%w: share tag %q: tags starting with %q are agentvm's", ErrConfig, s.Tag, TagPrefix)
		}
	}
	if mc.Vsock == nil {
		mc.Vsock = &corral.Vsock{}
	}
	var keys []string
	switch cfg.Root.kind {
	case rootInitrd:
	case rootHost, rootDir, rootDirRW:
		if cfg.Root.path == "" {
			return corral.Config{}, fmt.Errorf("%w: root directory: no path", ErrConfig)
		}
		rw := cfg.Root.writable()
		mc.Shares = append(mc.Shares, rootShare(cfg.Root.path, rw))
		keys = append(keys, rootKey+agent.Root{Kind: agent.Root9P, Source: rootTag, Writable: rw}.String())
	case rootImage:
		if cfg.Root.path == "" {
			return corral.Config{}, fmt.Errorf("%w: root image: no path", ErrConfig)
		}
		mc.Disks = append([]corral.Disk{{Path: cfg.Root.path, ReadOnly: true, Serial: "corral-root"}}, mc.Disks...)
		keys = append(keys, rootKey+"blk:"+RootDisk)
	}
	sys, err := cfg.system()
	if err != nil {
		return corral.Config{}, err
	}
	for i, s := range sys.Shares {
		mc.Shares = append(mc.Shares, corral.Share{Path: cfg.Shares[i].Host, Tag: s.Tag, ReadOnly: s.ReadOnly})
		keys = append(keys, shareKey+s.String())
	}
	if sys.Hostname != "" {
		keys = append(keys, agent.HostnamePrefix+sys.Hostname)
	}
	for _, p := range sys.Tmpfs {
		keys = append(keys, agent.TmpfsPrefix+p)
	}
	mc.Cmdline = appendCmdline(mc.Cmdline, keys...)
	return mc, nil
}

// system checks cfg's share guest paths, Hostname and Tmpfs by the
// agent's rules (agent.CheckMountPath, agent.CheckHostname,
// agent.BootConfig.Check: no two mounts at one path), so that what the
// agent would refuse after the boot is refused before it, with ErrConfig;
// it returns them as the agent gets them (tags set, paths cleaned).
func (cfg *Config) system() (agent.BootConfig, error) {
	var c agent.BootConfig
	if cfg.Hostname != "" {
		if err := agent.CheckHostname(cfg.Hostname); err != nil {
			return c, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		c.Hostname = cfg.Hostname
	}
	for i, s := range cfg.Shares {
		g := s.Guest
		if g == "" {
			g = s.Host
		}
		p, err := mountPath("share", g)
		if err != nil {
			return c, fmt.Errorf("%w: share %d (%s): %v", ErrConfig, i, s.Host, err)
		}
		c.Shares = append(c.Shares, agent.Share{Tag: fmt.Sprintf("%sshare%d", TagPrefix, i), Path: p, ReadOnly: s.ReadOnly})
	}
	for i, p := range cfg.Tmpfs {
		p, err := mountPath("tmpfs", p)
		if err != nil {
			return c, fmt.Errorf("%w: tmpfs %d: %v", ErrConfig, i, err)
		}
		c.Tmpfs = append(c.Tmpfs, p)
	}
	if err := c.Check(); err != nil {
		return c, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return c, nil
}

// mountPath checks the guest path p of a share or tmpfs (what) as
// CheckGuestPath and the agent do, and returns it cleaned.
func mountPath(what, p string) (string, error) {
	if err := CheckGuestPath(p); err != nil {
		return "", err
	}
	c, err := agent.CheckMountPath(p)
	if errors.Is(err, agent.ErrRootMount) {
		return "", fmt.Errorf("a %s cannot be the root", what)
	}
	return c, err
}

// CheckGuestPath accepts an absolute path that survives the kernel
// command line and the agent's TAG:PATH[:ro] syntax as one word: what a
// Share's Guest or a Tmpfs path must be (the containerd shim checks an
// OCI spec's mount destinations with it before booting).
func CheckGuestPath(p string) error {
	if !filepath.IsAbs(p) {
		return fmt.Errorf("guest path %q is not absolute", p)
	}
	for _, r := range p {
		if r <= ' ' || r == 0x7f || r == '"' || r == ':' {
			return fmt.Errorf("guest path %q has a space, control character, quote or ':', which the kernel command line cannot carry", p)
		}
	}
	return nil
}

// appendCmdline joins command-line words with single spaces.
func appendCmdline(cmdline string, words ...string) string {
	parts := []string{}
	if s := strings.TrimSpace(cmdline); s != "" {
		parts = append(parts, s)
	}
	parts = append(parts, words...)
	return strings.Join(parts, " ")
}

// kernelDirs are where a host keeps its kernel's interfaces (processes,
// devices) rather than files: the agent mounts the guest's own there.
func kernelDirs() []string { return []string{"/proc", "/sys", "/dev"} }

// rootShare is the share the guest's root is made from. kernelDirs are
// empty in it: the guest's own mounts hide the host's there after setup,
// and before it nothing in the guest reads the host's processes, devices
// or cgroups (the Go runtime of an agent the kernel starts from the share
// read the host's cgroup files at startup, and again every second). /tmp
// and /run, also hidden by the guest's mounts after setup, stay shared:
// the kernel may start the agent from there.
func rootShare(path string, writable bool) corral.Share {
	return corral.Share{Path: path, Tag: rootTag, ReadOnly: !writable, Empty: kernelDirs()}
}
