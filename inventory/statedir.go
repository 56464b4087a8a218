// Package inventory keeps the record of every machine on a host without a
// daemon: a directory per VM under the state directory holding its record
// (record.json), its console log and a lock file that the VMM holds
// exclusively for its whole life. Anyone can then tell a running VMM (the
// lock is held) from one that ended (the record says how) or crashed (the
// lock is free and the record does not say it ended).
package inventory

import (
	"fmt"
	"os"
	"path/filepath"
)

// StateDirEnv names the environment variable that overrides StateDir.
const StateDirEnv = "CORRAL_STATE_DIR"

// StateDir returns the host-wide state directory of this user's Corral
// processes (VM directories, network locks and leases): $CORRAL_STATE_DIR
// if set, else /run/corral for root, else $XDG_RUNTIME_DIR/corral, else
// corral-<uid> in the temporary directory. Every Corral process on a host
// must agree on it, which the default does per user.
func StateDir() string {
	if d := os.Getenv(StateDirEnv); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/corral"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "corral")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("corral-%d", os.Geteuid()))
}

// VMsDir is the directory of the VM directories in stateDir.
func VMsDir(stateDir string) string { return filepath.Join(stateDir, "vms") }

// SearchDirs returns the state directories a listing reads: StateDir, and
// for root with no $CORRAL_STATE_DIR also every user's default one
// (/run/user/*/corral, corral-* in the temporary directory), since root
// sees every user's VMs.
func SearchDirs() []string {
	dirs := []string{StateDir()}
	if os.Geteuid() != 0 || os.Getenv(StateDirEnv) != "" {
		return dirs
	}
	for _, pat := range []string{"/run/user/*/corral", filepath.Join(os.TempDir(), "corral-*")} {
		m, _ := filepath.Glob(pat) // only ErrBadPattern, and these are good
		for _, d := range m {
			if st, err := os.Stat(VMsDir(d)); err == nil && st.IsDir() {
				dirs = append(dirs, d)
			}
		}
	}
	return dirs
}
