package hostnet

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/corral-vmm/corral/inventory"
	"golang.org/x/sys/unix"
)

// StateDirEnv names the environment variable that overrides StateDir.
const StateDirEnv = inventory.StateDirEnv

// StateDir returns the directory of the host-wide lock and lease files,
// the inventory's state directory (inventory.StateDir): $CORRAL_STATE_DIR
// if set, else /run/corral for root, else $XDG_RUNTIME_DIR/corral, else
// corral-<uid> in the temporary directory. Every Corral process on a host
// must agree on it for allocations to be unique, which the default does
// per user (root's TAPs are root's).
func StateDir() string { return inventory.StateDir() }

// lockFile opens (creating it and dir) and exclusively flocks dir/name. The
// lock goes with the descriptor, so a crashed holder releases it; unlock
// by closing the file.
func lockFile(dir, name string) (*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("hostnet: state directory: %w", err)
	}
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hostnet: lock file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hostnet: lock %s: %w", p, err)
	}
	return f, nil
}
