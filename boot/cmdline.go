package boot

import (
	"fmt"
	"strings"

	"github.com/corral-vmm/corral/guestmem"
)

// checkCmdline rejects a command line longer than max bytes (without the
// NUL) or holding a NUL, which would cut it short in the guest.
func checkCmdline(s string, max uint64) error {
	if uint64(len(s)) > max {
		return fmt.Errorf("%w: command line is %d bytes, the limit is %d", ErrBadConfig, len(s), max)
	}
	if i := strings.IndexByte(s, 0); i >= 0 {
		return fmt.Errorf("%w: command line has a NUL byte at %d", ErrBadConfig, i)
	}
	return nil
}

// writeCmdline writes s and its terminating NUL at CmdlineAddr.
func writeCmdline(mem *guestmem.Memory, s string) error {
	if err := checkCmdline(s, CmdlineMax-1); err != nil {
		return err
	}
	b := make([]byte, len(s)+1)
	copy(b, s)
	if err := mem.WriteAt(b, CmdlineAddr); err != nil {
		return fmt.Errorf("boot: writing command line: %w", err)
	}
	return nil
}
