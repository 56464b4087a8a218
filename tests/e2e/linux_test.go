package e2e

import (
	"fmt"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// TestBzImagePowerOff boots the bzImage (Linux boot protocol) with the
// initramfs; /init runs a short script and `poweroff -f`, which must end
// the machine as ExitPowerOff.
func TestBzImagePowerOff(t *testing.T) {
	k := setupLinux(t)
	const cpus = 1
	script := "echo \"corral-test: uname $(uname -sm)\"\n" +
		"echo \"corral-test: nproc $(nproc)\"\n"
	initrd := writeInitramfs(t, rootfs.InitramfsOptions{Script: script, NoDHCP: true})
	r := startLinux(t, corral.Config{Kernel: k.bzImage, Initrd: initrd, CPUs: cpus, Cmdline: k.cmdline},
		"Linux version", "Run /init", "corral-init: start", "corral-init: exit status", "reboot: Power down")
	r.wait(t)
	r.wantExit(t, corral.ExitPowerOff, 0)
	r.want(t, "Run /init", "corral-test: uname Linux x86_64", fmt.Sprintf("corral-test: nproc %d", cpus),
		"corral-init: exit status 0 via poweroff", "reboot: Power down")
}
