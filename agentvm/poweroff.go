package agentvm

import "github.com/corral-vmm/corral"

// hasWritableDisk reports whether c has a disk the guest may write: its
// writes reach the image only through the device, so a machine with one
// powers off the guest's way (the kernel's shutdown path) rather than
// being stopped once the agent has synced.
func hasWritableDisk(c corral.Config) bool {
	for _, d := range c.Disks {
		if !d.ReadOnly {
			return true
		}
	}
	return false
}

// writesReachHost reports whether anything the guest writes can end up on
// the host: a writable disk or a writable share. Without either, a sync
// in the guest hands nothing over (its tmpfs and overlay go with it), so
// Close stops the machine without asking the agent.
func writesReachHost(c corral.Config) bool {
	if hasWritableDisk(c) {
		return true
	}
	for _, s := range c.Shares {
		if !s.ReadOnly {
			return true
		}
	}
	return false
}
