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
