package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/netnstest"
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
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: shortScript, NoDHCP: true})
	r := startLinux(t, corral.Config{Kernel: k.needBzImage(t), Initrd: initrd, CPUs: cpus, Cmdline: k.cmdline},
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

// smpScript is what /init runs in the SMP boot: it reads the whole of vda
// and reports its MD5, the CPU the kernel aimed the virtio-blk request
// interrupt (MSI-X) at, and that interrupt's count per CPU. (The kernel
// manages the affinity of virtio-blk queue interrupts itself: writing
// smp_affinity fails with EIO.) Then the NIC: its queues (one pair per
// vCPU, VIRTIO_NET_F_MQ), a DHCP lease and pings to the router (the TAP's
// host side), and its per-queue interrupts.
const smpScript = `t() { echo "corral-test: $*"; }
t "nproc $(nproc)"
irq=$(sed -n 's/^ *\([0-9]*\):.*virtio0-req.*/\1/p' /proc/interrupts | head -n 1)
t "irq $irq effective cpu $(cat /proc/irq/$irq/effective_affinity_list)"
t "vda md5 $(md5sum </dev/vda | cut -d' ' -f1)"
t "irqs $(grep virtio0-req /proc/interrupts)"
t "eth0 queues $(cd /sys/class/net/eth0/queues && echo *)"
read -r f </sys/class/net/eth0/device/features; t "eth0 features $f"
if udhcpc -i eth0 -n -q -t 5 -T 2 -s /usr/share/udhcpc/default.script; then t "udhcpc ok"; else t "udhcpc failed"; fi
set -- $(ip route show default)
if ping -c 3 -W 10 "$3" >/dev/null; then t "ping $3 ok"; else t "ping $3 failed"; fi
grep virtio1- /proc/interrupts
`

// TestPVHInitramfsSMPReboot boots vmlinux through its PVH entry on smpCPUs
// vCPUs with the initramfs, a read-only raw disk and a NIC on a TAP Corral
// creates in a fresh network namespace; the guest reads the disk (its
// bytes must arrive intact) and the disk's MSI-X interrupts must reach the
// CPU the kernel aimed them at (Corral routes MSI by destination APIC ID);
// the NIC has one queue pair per vCPU (VIRTIO_NET_F_MQ: rx-0, rx-1, tx-0,
// tx-1 in sysfs) and its DHCP and pings work; /init's `reboot -f` must end
// the machine as ExitReset (Corral does not reboot).
func TestPVHInitramfsSMPReboot(t *testing.T) {
	k := setupLinux(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: smpScript, NoDHCP: true, Exit: rootfs.ExitReboot})
	disk, sum := writePatternDisk(t, 1<<20)
	var r *vmRun
	netnstest.Run(t, func() {
		r = startLinux(t, corral.Config{Kernel: k.needVmlinux(t), Initrd: initrd, CPUs: smpCPUs, Cmdline: k.cmdline,
			// One queue: with one per vCPU (the default) md5sum's reads may all
			// go to the queue whose interrupt this test does not follow.
			Disks: []corral.Disk{{Path: disk, ReadOnly: true, Queues: 1}},
			Nets:  []corral.Net{{}}}, // one queue pair per vCPU: the default
			"Linux version", "smp: Brought up", "Run /init", "corral-init: start", "corral-test: udhcpc", "corral-test: ping",
			"corral-init: exit status", "reboot: Restarting system")
		r.wait(t)
	})
	r.wantExit(t, corral.ExitReset, 0)
	r.want(t, fmt.Sprintf("smp: Brought up 1 node, %d CPUs", smpCPUs), "Unpacking initramfs...", "Run /init as init process",
		"virtio_blk virtio0: [vda] 2048 512-byte logical blocks",
		fmt.Sprintf("corral-test: nproc %d", smpCPUs), "corral-test: vda md5 "+sum,
		"corral-test: eth0 queues rx-0 rx-1 tx-0 tx-1", "corral-test: udhcpc ok",
		"corral-init: exit status 0 via reboot", "reboot: Restarting system")
	r.wantRe(t, `corral-test: ping [0-9.]+ ok`)
	// VIRTIO_NET_F_MQ is bit 22 (the features file has one character per bit).
	if m := r.wantRe(t, `corral-test: eth0 features ([01]{64})`); m != nil && m[1][22] != '1' {
		t.Errorf("eth0 features %s: VIRTIO_NET_F_MQ not negotiated", m[1])
	}
	eff := r.wantRe(t, `corral-test: irq \d+ effective cpu (\d+)\s`)
	counts := r.wantRe(t, `corral-test: irqs\s+\d+:\s+(\d+)\s+(\d+)\s.*virtio0-req`)
	if eff != nil && counts != nil {
		cpu, _ := strconv.Atoi(eff[1])
		if cpu < 0 || cpu >= smpCPUs || counts[1+cpu] == "0" {
			t.Errorf("virtio-blk request interrupt aimed at CPU %s, counts per CPU %v: none arrived there", eff[1], counts[1:])
		} else {
			t.Logf("virtio-blk request interrupts on CPU %d (counts per CPU %v)", cpu, counts[1:])
		}
	}
	if !strings.Contains(r.logs.String(), `kind="PVH ELF"`) {
		t.Errorf("Corral's log does not show a PVH boot (kind=\"PVH ELF\")")
	}
}
