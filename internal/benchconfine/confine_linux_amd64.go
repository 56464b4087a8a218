//go:build linux && amd64

package benchconfine

import (
	"fmt"
	"os"

	"github.com/corral-vmm/corral/sandbox"
)

// confine applies the policy corral run applies after setup, with the
// temporary directory (where the benchmarks make their images, shares and
// sockets) as the one writable path, as a VMM's state directory is.
func confine() (string, error) {
	rep, err := sandbox.Apply(sandbox.Policy{WritePaths: []string{os.TempDir()}})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("confined: seccomp %v, Landlock ABI %d%s, capabilities dropped %v",
		rep.Seccomp, rep.Landlock, skip(rep.LandlockSkip), rep.CapsDropped), nil
}

func skip(why string) string {
	if why == "" {
		return ""
	}
	return " (skipped: " + why + ")"
}
