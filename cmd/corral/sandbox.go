package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/audit"
	"github.com/corral-vmm/corral/inventory"
	"github.com/corral-vmm/corral/sandbox"
)

// sandboxFlags are the confinement flags corral run and corral exec share
// (addSandboxFlags); applySandbox acts on them.
type sandboxFlags struct {
	seccomp  sandbox.SeccompMode
	landlock bool
	caps     bool // keep capabilities
	user     *sandbox.User
	set      bool // a sandbox flag was given explicitly

	// Paths the VMM needs beyond its configuration's: a snapshot it was
	// restored from (read), where snapshots may be written (write).
	extraRead, extraWrite []string
}

// addSandboxFlags defines --seccomp, --landlock, --caps and --user on fs.
func addSandboxFlags(fs *flag.FlagSet) *sandboxFlags {
	f := &sandboxFlags{landlock: true}
	fs.Func("seccomp", "system call filter: on (default), log (debugging: allow and log), off", func(v string) error {
		m, err := sandbox.ParseSeccompMode(v)
		f.seccomp, f.set = m, true
		return err
	})
	fs.Func("landlock", "file confinement: on (default; skipped where the kernel lacks it), off", func(v string) error {
		f.set = true
		switch v {
		case "on", "off":
			f.landlock = v == "on"
			return nil
		}
		return fmt.Errorf("landlock %q: want on or off", v)
	})
	fs.Func("caps", "capabilities after setup: drop (default) or keep", func(v string) error {
		f.set = true
		switch v {
		case "drop", "keep":
			f.caps = v == "keep"
			return nil
		}
		return fmt.Errorf("caps %q: want drop or keep", v)
	})
	fs.Func("user", "switch to UID[:GID] after setup", func(v string) error {
		u, err := parseUser(v)
		f.user, f.set = &u, true
		return err
	})
	return f
}

// parseUser parses --user UID[:GID]; GID defaults to UID (no user database
// is read: os/user would need cgo or /etc/passwd after confinement).
func parseUser(s string) (sandbox.User, error) {
	us, gs, hasG := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(us, 10, 31)
	if err != nil {
		return sandbox.User{}, fmt.Errorf("user %q: UID: want a number", s)
	}
	gid := uid
	if hasG {
		if gid, err = strconv.ParseUint(gs, 10, 31); err != nil {
			return sandbox.User{}, fmt.Errorf("user %q: GID: want a number", s)
		}
	}
	return sandbox.User{UID: int(uid), GID: int(gid)}, nil
}

// sandboxPolicy returns the policy for a machine built from cfg: it may
// read /proc/self, the boot ID, its kernel, initrd and read-only disks and
// shares, and write its
// other disks and shares, its vsock socket's directory, the state
// directory and the audit trail's directory (created now if missing, as
// Start would).
func sandboxPolicy(f *sandboxFlags, cfg *corral.Config, log *slog.Logger) (sandbox.Policy, error) {
	p := sandbox.Policy{Seccomp: f.seccomp, NoLandlock: !f.landlock, KeepCaps: f.caps, User: f.user, Logger: log}
	add := func(path string, write bool) {
		if write {
			p.WritePaths = append(p.WritePaths, path)
		} else {
			p.ReadPaths = append(p.ReadPaths, path)
		}
	}
	// The inventory and audit trail read this process's start time and the
	// boot ID; 9p reopens its files through /proc/self/fd (the target's
	// own rule decides those).
	add("/proc/self", false)
	add("/proc/sys/kernel/random/boot_id", false)
	add(cfg.Kernel, false)
	if cfg.Initrd != "" {
		add(cfg.Initrd, false)
	}
	for _, d := range cfg.Disks {
		add(d.Path, !d.ReadOnly)
	}
	for _, s := range cfg.Shares {
		add(s.Path, !s.ReadOnly)
	}
	if cfg.Vsock != nil && cfg.Vsock.UDSPath != "" {
		add(filepath.Dir(cfg.Vsock.UDSPath), true)
	}
	for _, path := range f.extraRead {
		add(path, false)
	}
	for _, path := range f.extraWrite {
		add(path, true)
	}
	if !cfg.NoInventory {
		state := cfg.StateDir
		if state == "" {
			state = inventory.StateDir()
		}
		for _, dir := range []string{state, filepath.Dir(audit.DefaultPath(state))} {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return p, fmt.Errorf("sandbox: %w", err)
			}
			add(dir, true)
		}
	}
	return p, nil
}

// active reports whether applySandbox confines the process: always,
// except inside a go test binary without a sandbox flag.
func (f *sandboxFlags) active() bool { return !testing.Testing() || f.set }

// applySandbox confines this process after setup (corral.New) and before
// the vCPUs run (Machine.Start): see sandbox.Apply and docs/security.md.
// corral run and corral exec call it. Inside a go test binary, which runs
// many commands in one process that can be confined only once, it does
// nothing unless a sandbox flag was given.
func applySandbox(f *sandboxFlags, cfg *corral.Config, log *slog.Logger) error {
	if !f.active() {
		return nil
	}
	p, err := sandboxPolicy(f, cfg, log)
	if err != nil {
		return err
	}
	if _, err := sandbox.Apply(p); err != nil {
		if errors.Is(err, sandbox.ErrAllThreads) {
			return fmt.Errorf("%w, or pass --caps=keep", err)
		}
		return err
	}
	return nil
}
