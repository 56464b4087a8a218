package agentvm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

// WarmSlots is how many shares a warm machine has: a snapshot fixes the
// device set, so a warm machine always has the root share and this many
// share slots (unused ones serve an empty directory). A Config with more
// shares boots cold.
const WarmSlots = 4

// WarmKeep is how many snapshots the warm cache keeps: building a new one
// removes the least recently used beyond it (each is the guest memory the
// agent's boot touched, tens of MiB), so a cache that sees new kernels,
// agents or corral versions does not grow without bound.
const WarmKeep = 4

// warmFormat names how warm machines are built and cached; it is part of
// the cache key, so a change here invalidates every cached snapshot.
const warmFormat = "corral-warm-1"

// restoredAgentTimeout bounds the wait for a restored agent: it was up
// when the snapshot was taken, so one that does not answer soon is a bad
// snapshot, rebuilt rather than waited for.
const restoredAgentTimeout = time.Minute

// Warm says where StartWarm caches its snapshots.
type Warm struct {
	// Dir holds the snapshots, one directory per cache key, with their
	// lock files; "" means DefaultWarmDir.
	Dir string
	// Version is the VMM's version, part of the cache key.
	Version string
}

// DefaultWarmDir is $XDG_CACHE_HOME/corral/warm (os.UserCacheDir).
func DefaultWarmDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("agentvm: warm cache: %w", err)
	}
	return filepath.Join(d, "corral", "warm"), nil
}

// StartWarm starts the machine cfg describes, as Start does, from a
// cached snapshot when it can. The first call for a given kernel, initrd,
// agent, vCPU count, memory size, command line and share layout boots the
// machine with the agent's setup deferred (corral.setup=deferred), waits
// for the agent, snapshots the machine into the cache and goes on with
// that machine; later calls restore the snapshot. Either way the agent
// then gets the root and shares in a Setup request, so they are mounted
// after the restore and show the host as it is now. Concurrent first
// calls build the snapshot once (a lock file); a snapshot that fails to
// restore is removed and built again.
//
// cfg.Confine runs once the agent has answered, with the machine paused
// and before Setup: until then the guest ran only the kernel and the
// agent. Configurations a snapshot cannot serve (a root image, more than
// WarmSlots shares, disks, NICs, shares or a vsock device in cfg.Machine)
// boot cold through Start, logging why.
func StartWarm(ctx context.Context, cfg Config, w Warm) (*VM, error) {
	log := cfg.Machine.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	steps := NewSteps(log, "warm")
	if why := cfg.coldReason(); why != "" {
		log.Info("warm: booting cold: " + why)
		return Start(ctx, cfg)
	}
	dir := w.Dir
	if dir == "" {
		var err error
		if dir, err = DefaultWarmDir(); err != nil {
			log.Info("warm: booting cold", "err", err)
			return Start(ctx, cfg)
		}
	}
	empty := filepath.Join(dir, "empty")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Info("warm: booting cold: no cache directory", "err", err)
		return Start(ctx, cfg)
	}
	if err := os.Mkdir(empty, 0o555); err != nil && !errors.Is(err, os.ErrExist) {
		log.Info("warm: booting cold: no cache directory", "err", err)
		return Start(ctx, cfg)
	}
	plan, err := cfg.warmPlan(empty)
	if err != nil {
		return nil, err
	}
	agentPath, err := cfg.FindAgent()
	if err != nil {
		return nil, err
	}
	plan.agent = agentPath
	self, _ := os.Executable() // the VMM: a rebuilt corral may snapshot differently
	key, err := warmKey(filepath.Join(dir, "ids"), w.Version, self, agentPath, &plan.mc)
	if err != nil {
		// A kernel or agent that cannot be read: Start says so properly.
		log.Info("warm: booting cold", "err", err)
		return Start(ctx, cfg)
	}
	// A machine this VMM could not snapshot (a device that cannot be
	// paused or saved) boots cold, once per key rather than twice.
	coldMark := filepath.Join(dir, key+".cold")
	if b, err := os.ReadFile(coldMark); err == nil {
		log.Info("warm: booting cold: this machine could not be snapshotted: " + strings.TrimSpace(string(b)))
		return Start(ctx, cfg)
	}
	markCold := func(err error) {
		log.Info("warm: this machine cannot be snapshotted; it boots cold from now on", "err", err, "mark", coldMark)
		os.WriteFile(coldMark, []byte(err.Error()+"\n"), 0o600)
	}
	c := &warmCache{dir: dir, log: log}
	vm, err := warmGet(ctx, c, key,
		func(snap string) (*VM, error) { return cfg.restoreWarm(ctx, plan, snap, log, steps) },
		func(tmp string, commit func() error) (*VM, error) {
			return cfg.buildWarm(ctx, plan, tmp, commit, markCold, log)
		})
	if errors.Is(err, errCannotPause) {
		return Start(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	if err := vm.setup(ctx, &plan.setup); err != nil {
		vm.Kill()
		return nil, fmt.Errorf("agentvm: warm machine: %w", err)
	}
	vm.withHostRoot(cfg)
	steps.Step("Setup done")
	return vm, nil
}

// coldReason says why cfg cannot start warm, or "".
func (cfg *Config) coldReason() string {
	m := &cfg.Machine
	switch {
	case cfg.Root.kind == rootImage:
		return "the root is an image (a virtio-blk disk)"
	case len(cfg.Shares) > WarmSlots:
		return fmt.Sprintf("%d shares, a warm machine has %d slots", len(cfg.Shares), WarmSlots)
	case len(m.Disks) > 0:
		return "the machine has disks"
	case len(m.Nets) > 0:
		return "the machine has NICs"
	case len(m.Shares) > 0:
		return "the machine has shares of its own (Config.Machine.Shares)"
	case m.Vsock != nil:
		return "the machine has a vsock device of its own"
	}
	return ""
}

// warmPlan is a warm machine: its configuration (the root share and
// WarmSlots share slots, a vsock device, deferred setup) and what it is
// told in Setup: root, shares, host name and tmpfs, none of which is in
// the snapshot (a writable root's share is, through the key's Modes).
type warmPlan struct {
	mc    corral.Config
	setup proto.Setup
	agent string // the agent's path (Config.FindAgent)
}

// warmPlan lays cfg out on a warm machine's fixed devices; empty is the
// directory unused slots serve.
func (cfg *Config) warmPlan(empty string) (*warmPlan, error) {
	p := &warmPlan{mc: cfg.Machine}
	p.mc.Vsock = &corral.Vsock{}
	p.mc.Shares = nil
	rootPath := empty
	switch cfg.Root.kind {
	case rootHost, rootDir, rootDirRW:
		if cfg.Root.path == "" {
			return nil, fmt.Errorf("%w: root directory: no path", ErrConfig)
		}
		rootPath = cfg.Root.path
		p.setup.Root = agent.Root{Kind: agent.Root9P, Source: rootTag, Writable: cfg.Root.writable()}.String()
	}
	p.mc.Shares = append(p.mc.Shares, rootShare(rootPath, cfg.Root.writable()))
	// system checks the shares' guest paths by the agent's rules and
	// gives them as the agent gets them (tags set, paths cleaned).
	sys, err := cfg.system()
	if err != nil {
		return nil, err
	}
	for i := range WarmSlots {
		if i >= len(sys.Shares) {
			tag := fmt.Sprintf("%sshare%d", TagPrefix, i)
			p.mc.Shares = append(p.mc.Shares, corral.Share{Path: empty, Tag: tag, ReadOnly: true})
			continue
		}
		s := sys.Shares[i]
		p.mc.Shares = append(p.mc.Shares, corral.Share{Path: cfg.Shares[i].Host, Tag: s.Tag, ReadOnly: s.ReadOnly})
		p.setup.Shares = append(p.setup.Shares, s.String())
	}
	p.setup.Hostname, p.setup.Tmpfs = sys.Hostname, sys.Tmpfs
	p.mc.Cmdline = appendCmdline(warmKernelParams+" "+p.mc.Cmdline, agent.SetupPrefix+agent.SetupDeferred)
	return p, nil
}

// warmKernelParams go first on a warm machine's command line (before any
// "--" of the caller's). tsc=nowatchdog: a restored guest's clocksource
// watchdog sees the restore's gap between the TSC and kvmclock and prints
// "clocksource: Long readout interval" (or, for a gap under a second,
// marks the TSC unstable) on every restore; the line cost a warm exec
// ~130 emulated UART exits under TCG. Linux already turns that watchdog
// off where the TSC is invariant and has TSC_ADJUST; no other clocksource
// is watched. Part of the cache key, as the whole command line is.
const warmKernelParams = "tsc=nowatchdog"

// warmInputs is everything that makes one warm snapshot differ from
// another; its SHA-256 is the cache key.
type warmInputs struct {
	Format  string `json:"format"`
	Version string `json:"version"`
	Proto   int    `json:"proto"`
	Kernel  string `json:"kernel"` // content SHA-256
	Initrd  string `json:"initrd"` // the user's initrd's, "" for none
	Agent   string `json:"agent"`
	VMM     string `json:"vmm"` // the VMM's executable
	CPUs    int    `json:"cpus"`
	Memory  uint64 `json:"memory"`
	NoACPI  bool   `json:"no_acpi"`
	Cmdline string `json:"cmdline"`
	Slots   int    `json:"slots"`
	Modes   string `json:"modes"` // read-only or read-write, per share device
}

// key returns the cache key of in.
func (in *warmInputs) key() string {
	b, err := json.Marshal(in)
	if err != nil {
		panic(err) // plain strings and numbers
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// warmKey hashes what the snapshot of the warm machine mc depends on;
// file contents are hashed once per file version (idDir keeps them).
func warmKey(idDir, version, vmmPath, agentPath string, mc *corral.Config) (string, error) {
	in := warmInputs{
		Format: warmFormat, Version: version, Proto: proto.Version,
		CPUs: mc.CPUs, Memory: mc.Memory, NoACPI: mc.NoACPI, Cmdline: mc.Cmdline,
		Slots: WarmSlots,
	}
	if in.CPUs == 0 {
		in.CPUs = corral.DefaultCPUs
	}
	if in.Memory == 0 {
		in.Memory = corral.DefaultMemory
	}
	for _, s := range mc.Shares {
		if s.ReadOnly {
			in.Modes += "r"
		} else {
			in.Modes += "w"
		}
	}
	var err error
	if in.Kernel, err = fileHash(idDir, mc.Kernel); err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	if mc.Initrd != "" {
		if in.Initrd, err = fileHash(idDir, mc.Initrd); err != nil {
			return "", fmt.Errorf("initrd: %w", err)
		}
	}
	if in.Agent, err = fileHash(idDir, agentPath); err != nil {
		return "", fmt.Errorf("agent: %w", err)
	}
	if vmmPath != "" {
		if in.VMM, err = fileHash(idDir, vmmPath); err != nil {
			return "", fmt.Errorf("the VMM's executable: %w", err)
		}
	}
	return in.key(), nil
}

// racyAge is how old a file's mtime must be for its hash to be recorded:
// file systems with coarse timestamps (tmpfs ticks in jiffies) give a
// rewrite within the same tick the same identity, so a file modified just
// now is hashed every time until it has aged (git's "racy" entries).
const racyAge = 2 * time.Second

// fileHash returns the hex SHA-256 of path's content. It is kept in idDir
// under the file's identity (path, device, inode, size, mtime, ctime), so
// an unchanged file is hashed once; a changed one gets a new record.
func fileHash(idDir, path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var st unix.Stat_t
	if err := unix.Stat(abs, &st); err != nil {
		return "", &os.PathError{Op: "stat", Path: abs, Err: err}
	}
	id := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d:%d:%d:%d.%d:%d.%d", abs, st.Dev, st.Ino, st.Size,
		st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec))
	rec := filepath.Join(idDir, hex.EncodeToString(id[:16]))
	if b, err := os.ReadFile(rec); err == nil && len(b) == 64 {
		if _, err := hex.DecodeString(string(b)); err == nil {
			return string(b), nil
		}
	}
	f, err := os.Open(abs)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hashing %s: %w", abs, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	// The record is an optimisation: failing to keep it costs a hash.
	if time.Since(time.Unix(st.Mtim.Unix())) < racyAge {
		return sum, nil
	}
	if os.MkdirAll(idDir, 0o700) == nil {
		if tf, err := os.CreateTemp(idDir, ".tmp-*"); err == nil {
			_, werr := tf.WriteString(sum)
			if cerr := tf.Close(); werr != nil || cerr != nil || os.Rename(tf.Name(), rec) != nil {
				os.Remove(tf.Name())
			}
		}
	}
	return sum, nil
}

// errCannotPause is returned by buildWarm for a machine that cannot be
// paused: it was stopped, and the caller boots cold.
var errCannotPause = errors.New("agentvm: warm: the machine cannot be paused")

// buildWarm boots the warm machine, snapshots it into tmp and commits it,
// confines the process and lets the machine run on: the first exec goes
// on with the machine it booted. A snapshot that fails is logged, and
// the machine still serves; a machine that cannot even be paused is
// stopped (errCannotPause: it is not confined, and could only be while
// its vCPUs run). Either marks the key cold (markCold).
func (cfg *Config) buildWarm(ctx context.Context, p *warmPlan, tmp string, commit func() error, markCold func(error), log *slog.Logger) (*VM, error) {
	agentBytes, err := readAgent(p.agent)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	vm, err := boot(ctx, *cfg, p.mc, agentBytes, nil)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	m := vm.m
	if err := m.Pause(ctx); err != nil {
		os.RemoveAll(tmp)
		vm.Kill()
		if ctx.Err() != nil {
			return nil, err
		}
		markCold(err)
		return nil, fmt.Errorf("%w: %w", errCannotPause, err)
	}
	if err := m.Snapshot(ctx, tmp); err != nil {
		os.RemoveAll(tmp)
		if ctx.Err() != nil {
			vm.Kill()
			return nil, err
		}
		markCold(err)
	} else if err := commit(); err != nil {
		log.Warn("warm: keeping the snapshot failed; this exec runs on, nothing is cached", "err", err)
		os.RemoveAll(tmp)
	}
	// Confined while paused, before anything of the caller's reaches the
	// guest, and after the last write to the cache.
	if err := cfg.confineRunning(m); err != nil {
		vm.Kill()
		return nil, err
	}
	if err := m.Resume(); err != nil {
		vm.Kill()
		return nil, fmt.Errorf("agentvm: resuming after the warm snapshot: %w", err)
	}
	return vm, nil
}

// confineRunning calls cfg.Confine with m's configuration (no initrd path
// to open: it is in guest memory).
func (cfg *Config) confineRunning(m *corral.Machine) error {
	if cfg.Confine == nil {
		return nil
	}
	cc := m.Config()
	cc.Initrd = ""
	if err := cfg.Confine(&cc); err != nil {
		return fmt.Errorf("agentvm: confining: %w", err)
	}
	return nil
}

// damagedError is a restore that failed because of the snapshot (or its
// guest): the snapshot is removed and built again.
type damagedError struct{ err error }

func (e *damagedError) Error() string { return e.err.Error() }
func (e *damagedError) Unwrap() error { return e.err }

// restoreWarm restores the snapshot in snap with this exec's shares,
// waits for the agent, then confines the process (paused).
func (cfg *Config) restoreWarm(ctx context.Context, p *warmPlan, snap string, log *slog.Logger, steps *Steps) (*VM, error) {
	t0 := time.Now()
	steps.Step("cache key and lock")
	mc := &p.mc
	ring := newConsoleRing(mc.Console, ConsoleLines)
	m, err := corral.Restore(ctx, snap, corral.RestoreConfig{
		Name: mc.Name, Labels: mc.Labels, StateDir: mc.StateDir, NoInventory: mc.NoInventory, TTL: mc.TTL,
		Console: ring, ConsoleIn: mc.ConsoleIn, Logger: mc.Logger, KVMDevice: mc.KVMDevice,
		Shares: mc.Shares,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &damagedError{fmt.Errorf("agentvm: %w", err)}
	}
	steps.Step("restored")
	if err := m.Start(context.Background()); err != nil {
		m.Close()
		return nil, &damagedError{fmt.Errorf("agentvm: starting the restored machine: %w", err)}
	}
	vm := newVM(m, ring, mc.Logger)
	vm.keepProbe = true // Setup goes on the readiness probe's connection
	if err := vm.waitAgent(ctx, min(cfg.agentTimeout(), restoredAgentTimeout), func() corral.Exit { x, _ := m.Wait(); return x }); err != nil {
		vm.Kill()
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, &damagedError{err}
	}
	steps.Step("agent answered Hello")
	if cfg.Confine != nil {
		if err := m.Pause(ctx); err != nil {
			vm.Kill()
			return nil, fmt.Errorf("agentvm: pausing to confine: %w", err)
		}
		if err := cfg.confineRunning(m); err != nil {
			vm.Kill()
			return nil, err
		}
		if err := m.Resume(); err != nil {
			vm.Kill()
			return nil, fmt.Errorf("agentvm: resuming after confining: %w", err)
		}
		steps.Step("confined")
	}
	log.Info(fmt.Sprintf("warm: restored %s in %v", snap, time.Since(t0).Round(time.Millisecond)), "dir", snap)
	return vm, nil
}

// setup sends the agent its Setup request: on the readiness probe's
// connection when waitAgent kept it (keepProbe), else on a new one. An
// agent of proto.ExecAfterSetupVersion leaves the session open after its
// Ack: it is kept for the first command (Command), which then costs no
// dial and Hello of its own.
func (vm *VM) setup(ctx context.Context, req *proto.Setup) error {
	conn, v := vm.takeProbe()
	if conn == nil {
		var err error
		if conn, err = vm.Dial(ctx); err != nil {
			return fmt.Errorf("dialing the agent for its setup: %w", err)
		}
		if v, err = vm.greet(ctx, conn); err != nil {
			conn.Close()
			return fmt.Errorf("greeting the agent for its setup: %w", err)
		}
	}
	open, err := client.SetupOpen(ctx, conn, v, req)
	if err != nil || !open {
		return err
	}
	vm.probeMu.Lock()
	defer vm.probeMu.Unlock()
	if vm.session != nil {
		vm.session.Close()
	}
	vm.session, vm.sessionVersion = conn, v
	return nil
}

// warmCache is the snapshot cache: a directory per key, a lock file per
// key beside it (key.lock), snapshots built in key.tmp-* and renamed.
type warmCache struct {
	dir string
	log *slog.Logger
}

// lock takes how (LOCK_SH or LOCK_EX) on f, waiting until ctx ends.
func (c *warmCache) lock(ctx context.Context, f *os.File, how int, what string) error {
	wait := 10 * time.Millisecond
	logged := false
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("agentvm: warm: locking %s: %w", f.Name(), err)
		}
		if !logged {
			c.log.Info("warm: waiting for another corral to " + what)
			logged = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("agentvm: warm: waiting for %s: %w", f.Name(), ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}

func unlock(f *os.File) { unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// dirIno returns the inode of directory path, and whether it is one.
func dirIno(path string) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, false
	}
	return st.Ino, true
}

// warmGet returns restore's result for the cached snapshot of key, or
// build's: build writes the snapshot into tmp and calls commit, which
// moves it into place (nothing touches the cache after commit, nor after
// build or restore succeed: they may confine the process). Restores share
// the lock; a build holds it alone, so concurrent callers build a key
// once and the others wait, then restore. A restore that fails with a
// *damagedError removes the snapshot and builds it again.
func warmGet[T any](ctx context.Context, c *warmCache, key string,
	restore func(snap string) (T, error), build func(tmp string, commit func() error) (T, error)) (T, error) {
	var zero T
	snap := filepath.Join(c.dir, key)
	lf, err := os.OpenFile(snap+".lock", os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return zero, fmt.Errorf("agentvm: warm: %w", err)
	}
	defer lf.Close()
	var refused uint64 // the inode of a snapshot that failed to restore
	for range 3 {
		if err := c.lock(ctx, lf, unix.LOCK_SH, "build "+snap); err != nil {
			return zero, err
		}
		if ino, ok := dirIno(snap); ok && ino != refused {
			v, err := restore(snap)
			unlock(lf)
			if err == nil {
				// Most recently used first when the cache is trimmed: the
				// order of modification times, not the date, counts.
				now := time.Now()
				os.Chtimes(snap, now, now)
				return v, nil
			}
			var d *damagedError
			if !errors.As(err, &d) {
				return zero, err
			}
			c.log.Warn("warm: the cached snapshot was refused; building it again", "dir", snap, "err", d.err)
			refused = ino
		} else {
			unlock(lf)
		}
		if err := c.lock(ctx, lf, unix.LOCK_EX, "finish with "+snap); err != nil {
			return zero, err
		}
		if ino, ok := dirIno(snap); ok {
			if ino != refused {
				unlock(lf) // another caller built it meanwhile
				continue
			}
			if err := os.RemoveAll(snap); err != nil {
				unlock(lf)
				return zero, fmt.Errorf("agentvm: warm: removing the refused snapshot: %w", err)
			}
		}
		// What a builder that died left behind.
		if old, _ := filepath.Glob(snap + ".tmp-*"); len(old) > 0 {
			for _, o := range old {
				os.RemoveAll(o)
			}
		}
		tmp, err := os.MkdirTemp(c.dir, key+".tmp-")
		if err != nil {
			unlock(lf)
			return zero, fmt.Errorf("agentvm: warm: %w", err)
		}
		v, err := build(tmp, func() error {
			if err := os.Rename(tmp, snap); err != nil {
				return err
			}
			if d, err := os.Open(c.dir); err == nil {
				d.Sync()
				d.Close()
			}
			c.log.Info("warm: built "+snap, "dir", snap)
			return nil
		})
		unlock(lf)
		if err == nil {
			c.trim(key, WarmKeep)
		}
		return v, err
	}
	return zero, fmt.Errorf("agentvm: warm: the snapshot %s was refused again after it was rebuilt", snap)
}

// trim removes the least recently used snapshots (by the modification
// time a restore or build gave their directory) beyond keep, never the
// one named key. A snapshot another corral is restoring holds its lock
// shared and is skipped; a machine already restored from one maps its
// memory file, which stays readable after the removal. Lock files stay:
// removing one could let two callers lock different files for one key.
func (c *warmCache) trim(key string, keep int) {
	entries, err := os.ReadDir(c.dir)
	if err != nil {
		return
	}
	type snap struct {
		key  string
		used time.Time
	}
	var snaps []snap
	for _, e := range entries {
		k, ok := strings.CutSuffix(e.Name(), ".lock")
		if !ok {
			continue
		}
		if fi, err := os.Stat(filepath.Join(c.dir, k)); err == nil && fi.IsDir() {
			snaps = append(snaps, snap{k, fi.ModTime()})
		}
	}
	if len(snaps) <= keep {
		return
	}
	slices.SortFunc(snaps, func(a, b snap) int { return b.used.Compare(a.used) })
	kept := 0
	for _, s := range snaps {
		if s.key == key || kept < keep-1 {
			if s.key != key {
				kept++
			}
			continue
		}
		lf, err := os.OpenFile(filepath.Join(c.dir, s.key+".lock"), os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(lf.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			if err := os.RemoveAll(filepath.Join(c.dir, s.key)); err != nil {
				c.log.Warn("warm: removing an old snapshot", "dir", filepath.Join(c.dir, s.key), "err", err)
			} else {
				c.log.Info("warm: removed the least recently used snapshot", "dir", filepath.Join(c.dir, s.key), "keep", keep)
			}
			unix.Flock(int(lf.Fd()), unix.LOCK_UN)
		}
		lf.Close()
	}
}
