package e2e

import (
	"fmt"
	"strings"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// smpCPUs is the vCPU count of the SMP boots. On the nested KVM of the
// development machines an SMP guest needs the test kernel's patch 0004 (no
// PV IPIs: KVM hypercalls from guest ring 0 never complete there).
const smpCPUs = 2

// shortScript is what /init runs in the initramfs boots.
const shortScript = "echo \"corral-test: uname $(uname -sm)\"\n" +
	"echo \"corral-test: nproc $(nproc)\"\n"

// TestBzImagePowerOff boots the bzImage (Linux boot protocol) on one vCPU
// with the initramfs; /init runs a short script and `poweroff -f`, which
// must end the machine as ExitPowerOff.
func TestBzImagePowerOff(t *testing.T) {
	k := setupLinux(t)
	const cpus = 1
	initrd := writeInitramfs(t, rootfs.InitramfsOptions{Script: shortScript, NoDHCP: true})
	r := startLinux(t, corral.Config{Kernel: k.bzImage, Initrd: initrd, CPUs: cpus, Cmdline: k.cmdline},
		"Linux version", "Run /init", "corral-init: start", "corral-init: exit status", "reboot: Power down")
	r.wait(t)
	r.wantExit(t, corral.ExitPowerOff, 0)
	r.want(t, "Command line: "+k.cmdline, "Unpacking initramfs...", "Run /init as init process",
		"corral-test: uname Linux x86_64", fmt.Sprintf("corral-test: nproc %d", cpus),
		"corral-init: exit status 0 via poweroff", "reboot: Power down")
	if !strings.Contains(r.logs.String(), "kind=bzImage") {
		t.Errorf("Corral's log does not show a bzImage boot (kind=bzImage)")
	}
}

// TestPVHInitramfsReboot boots vmlinux through its PVH entry on smpCPUs
// vCPUs with the initramfs; /init's `reboot -f` must end the machine as
// ExitReset (Corral does not reboot).
func TestPVHInitramfsReboot(t *testing.T) {
	k := setupLinux(t)
	initrd := writeInitramfs(t, rootfs.InitramfsOptions{Script: shortScript, NoDHCP: true, Exit: rootfs.ExitReboot})
	r := startLinux(t, corral.Config{Kernel: k.vmlinux, Initrd: initrd, CPUs: smpCPUs, Cmdline: k.cmdline},
		"Linux version", "smp: Brought up", "Run /init", "corral-init: start", "corral-init: exit status", "reboot: Restarting system")
	r.wait(t)
	r.wantExit(t, corral.ExitReset, 0)
	r.want(t, fmt.Sprintf("smp: Brought up 1 node, %d CPUs", smpCPUs), "Unpacking initramfs...", "Run /init as init process",
		fmt.Sprintf("corral-test: nproc %d", smpCPUs), "corral-init: exit status 0 via reboot", "reboot: Restarting system")
	if !strings.Contains(r.logs.String(), `kind="PVH ELF"`) {
		t.Errorf("Corral's log does not show a PVH boot (kind=\"PVH ELF\")")
	}
}
