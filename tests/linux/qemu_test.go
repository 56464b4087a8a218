package linux_test

// Opt-in boots of the test kernel under QEMU, to show that the kernel, the
// initramfs and the ext4 root work on this machine before Corral runs them.
// Run with:
//
//	CORRAL_QEMU_LINUX=1 go test -v -timeout 30m ./tests/linux/
//
// The kernel, its command line and QEMU's -cpu follow kernel.Choose
// (CORRAL_LINUX_KERNEL=plain|patched overrides it).
// CORRAL_QEMU_TIMEOUT (default 5m) bounds each boot.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// defaultBootTimeout bounds one boot: ring 0 is emulated on the nested KVM,
// where a boot to user space takes a minute or more, and several minutes
// when other work shares the two cores. CORRAL_QEMU_TIMEOUT (a Go duration)
// overrides it.
const defaultBootTimeout = 5 * time.Minute

func bootTimeout(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv("CORRAL_QEMU_TIMEOUT")
	if v == "" {
		return defaultBootTimeout
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("CORRAL_QEMU_TIMEOUT=%q: want a positive Go duration such as 10m", v)
	}
	return d
}

type qemuSetup struct {
	qemu    string
	vmlinux string
	choice  kernel.Choice
}

func setupQEMU(t *testing.T) qemuSetup {
	t.Helper()
	if os.Getenv("CORRAL_QEMU_LINUX") != "1" {
		t.Skip("QEMU Linux boots are opt-in: set CORRAL_QEMU_LINUX=1")
	}
	qemu := testenv.MustHaveQEMU(t)
	testenv.MustHaveKVM(t)
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	choice, err := kernel.ChooseHost()
	if err != nil {
		t.Fatal(err)
	}
	_, vmlinux, err := kernel.Find(choice.Patched)
	if errors.Is(err, kernel.ErrNotBuilt) {
		t.Skipf("the %s test kernel is not built (run %s): %v", choice.Kind(), choice.BuildHint(), err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel: %s (%s)", choice.Kind(), choice.Reason)
	return qemuSetup{qemu: qemu, vmlinux: vmlinux, choice: choice}
}

// baseArgs are the QEMU arguments shared by every boot.
func (s qemuSetup) baseArgs(machine string) []string {
	return s.baseArgsSMP(machine, 1)
}

// baseArgsSMP is baseArgs with cpus virtual CPUs.
func (s qemuSetup) baseArgsSMP(machine string, cpus int) []string {
	return []string{"-smp", strconv.Itoa(cpus),
		"-enable-kvm", "-M", machine, "-cpu", s.choice.QEMUCPU(),
		"-m", "256", "-nodefaults", "-nographic", "-no-reboot",
		"-serial", "stdio", "-kernel", s.vmlinux,
	}
}

// bootResult is what one QEMU run printed and how it ended.
type bootResult struct {
	console  []byte
	elapsed  time.Duration
	marks    map[string]time.Duration // first time each watched string appeared
	exitCode int
	timedOut bool
	timeout  time.Duration
}

// runQEMU runs QEMU until it exits or bootTimeout passes, recording when each
// of the watch strings first appears on the serial console.
func runQEMU(t *testing.T, qemu string, args []string, watch ...string) bootResult {
	t.Helper()
	return runQEMUInteractive(t, qemu, args, nil, watch...)
}

// runQEMUInteractive is runQEMU that also types answers[s] on the serial
// console the first time a console line contains s.
func runQEMUInteractive(t *testing.T, qemu string, args []string, answers map[string]string, watch ...string) bootResult {
	t.Helper()
	t.Logf("%s %s", qemu, strings.Join(args, " "))
	timeout := bootTimeout(t)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting QEMU: %v", err)
	}
	res := bootResult{marks: map[string]time.Duration{}, timeout: timeout}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		r := bufio.NewReader(stdout)
		for {
			line, err := r.ReadBytes('\n')
			mu.Lock()
			res.console = append(res.console, line...)
			for _, w := range watch {
				if _, seen := res.marks[w]; !seen && bytes.Contains(line, []byte(w)) {
					res.marks[w] = time.Since(start)
				}
			}
			for prompt, answer := range answers {
				if bytes.Contains(line, []byte(prompt)) {
					delete(answers, prompt)
					// QEMU may have exited; its end is checked below.
					_, _ = io.WriteString(stdin, answer)
				}
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	<-done
	werr := cmd.Wait()
	res.elapsed = time.Since(start)
	res.timedOut = ctx.Err() != nil
	var ee *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &ee):
		res.exitCode = ee.ExitCode()
	default:
		t.Errorf("QEMU: %v", werr)
	}
	if stderr.Len() > 0 {
		t.Logf("QEMU stderr: %s", bytes.TrimSpace(stderr.Bytes()))
	}
	return res
}

func (r bootResult) logTimes(t *testing.T, watch ...string) {
	t.Helper()
	var b strings.Builder
	for _, w := range watch {
		if d, ok := r.marks[w]; ok {
			fmt.Fprintf(&b, "  %-40q at %6.1fs\n", w, d.Seconds())
		} else {
			fmt.Fprintf(&b, "  %-40q never\n", w)
		}
	}
	t.Logf("QEMU ran %.1fs (exit code %d, timed out %v)\n%s", r.elapsed.Seconds(), r.exitCode, r.timedOut, b.String())
}

// check fails the test unless the boot ended by itself and printed every want string.
func (r bootResult) check(t *testing.T, want ...string) {
	t.Helper()
	failed := false
	if r.timedOut {
		t.Errorf("QEMU did not end within %v (CORRAL_QEMU_TIMEOUT raises the bound)", r.timeout)
		failed = true
	}
	for _, w := range want {
		if !bytes.Contains(r.console, []byte(w)) {
			t.Errorf("console never showed %q", w)
			failed = true
		}
	}
	if bytes.Contains(r.console, []byte("emulation failure")) {
		t.Errorf("the nested KVM refused an instruction (see console)")
		failed = true
	}
	if failed || testing.Verbose() {
		t.Logf("console:\n%s", r.console)
	}
}

const userScript = `echo "corral-test: uname $(uname -sm)"
echo "corral-test: pid $$ ppid $PPID"
ls /bin/busybox >/dev/null && echo "corral-test: userspace ok"
exit 0
`

// TestQEMUInitramfsPoweroff boots vmlinux (PVH) on microvm with the
// initramfs, runs a script and ends QEMU with poweroff -f (ACPI S5).
func TestQEMUInitramfsPoweroff(t *testing.T) {
	s := setupQEMU(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: userScript, NoDHCP: true})
	args := append(s.baseArgs("microvm"), "-initrd", initrd, "-append", s.choice.Cmdline())
	watch := []string{"Linux version", "Run /init", "corral-init: start", "corral-test: userspace ok", "corral-init: exit status", "reboot: Power down"}
	r := runQEMU(t, s.qemu, args, watch...)
	r.logTimes(t, watch...)
	r.check(t, "Run /init", "corral-init: mounted proc", "corral-test: uname Linux x86_64", "corral-test: userspace ok", "corral-init: script exit status 0")
	if st, ok := rootfs.ExitStatus(r.console); !ok || st != 0 {
		t.Errorf("ExitStatus = %d, %v; want 0, true", st, ok)
	}
	if r.exitCode != 0 {
		t.Errorf("QEMU exit code %d after poweroff, want 0", r.exitCode)
	}
}

// TestQEMUDebugExitPort ends the VM by writing the script's status to the
// debug-exit port 0xf4 through /dev/port; QEMU exits with 2*status+1.
func TestQEMUDebugExitPort(t *testing.T) {
	s := setupQEMU(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: "echo corral-test: exiting 5\nexit 5\n", Exit: rootfs.ExitPort, NoDHCP: true})
	args := append(s.baseArgs("microvm"), "-device", "isa-debug-exit,iobase=0xf4,iosize=1", "-initrd", initrd, "-append", s.choice.Cmdline())
	watch := []string{"Run /init", "corral-init: exit status"}
	r := runQEMU(t, s.qemu, args, watch...)
	r.logTimes(t, watch...)
	r.check(t, "corral-test: exiting 5", "corral-init: exit status 5 via port")
	if r.exitCode != 2*5+1 {
		t.Errorf("QEMU exit code %d, want 11 (isa-debug-exit: 2*5+1)", r.exitCode)
	}
}

// TestQEMUExt4RootVirtioBlk boots with the root on an ext4 image behind
// virtio-blk-pci (microvm with PCIe), no initramfs.
func TestQEMUExt4RootVirtioBlk(t *testing.T) {
	s := setupQEMU(t)
	img := filepath.Join(t.TempDir(), "root.ext4")
	script := "echo corral-test: root $(grep ' / ' /proc/mounts | cut -d' ' -f1,3)\n" +
		"echo hello > /root/written && sync && echo corral-test: wrote to root\n"
	if err := rootfs.BuildExt4(img, 32, rootfs.InitramfsOptions{Script: script, NoDHCP: true}); err != nil {
		t.Fatal(err)
	}
	args := append(s.baseArgs("microvm,pcie=on"),
		"-drive", "if=none,id=d0,format=raw,file="+img,
		"-device", "virtio-blk-pci,drive=d0",
		"-append", s.choice.Cmdline()+" root=/dev/vda rw rootfstype=ext4")
	watch := []string{"virtio_blk", "VFS: Mounted root", "Run /sbin/init", "corral-init: start", "corral-test: wrote to root", "reboot: Power down"}
	r := runQEMU(t, s.qemu, args, watch...)
	r.logTimes(t, watch...)
	r.check(t, "vda", "VFS: Mounted root (ext4 filesystem)", "corral-test: root /dev/root ext4", "corral-test: wrote to root", "corral-init: exit status 0")

	dbg := testenv.MustHaveCommand(t, "debugfs", "e2fsprogs")
	out, err := exec.Command(dbg, "-R", "cat /root/written", img).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	if string(out) != "hello\n" {
		t.Errorf("file the guest wrote reads %q from the image, want %q", out, "hello\n")
	}
}

// TestQEMUVirtioNetDHCP boots with virtio-net-pci on QEMU's user network
// (restrict=on: the guest reaches nothing beyond QEMU's own DHCP server):
// the kernel's DHCP client (ip=dhcp) configures eth0, then busybox udhcpc
// asks again from user space.
func TestQEMUVirtioNetDHCP(t *testing.T) {
	s := setupQEMU(t)
	script := "echo corral-test: kernel-dhcp $(ip -4 addr show dev eth0 | sed -n 's/^ *inet \\([0-9.\\/]*\\).*/\\1/p')\n" +
		"udhcpc -i eth0 -n -q -t 5 -T 2 -s /usr/share/udhcpc/default.script && echo corral-test: udhcpc ok\n"
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: script})
	args := append(s.baseArgs("microvm,pcie=on"),
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
		"-initrd", initrd, "-append", s.choice.Cmdline()+" ip=dhcp")
	watch := []string{"IP-Config: Complete", "Run /init", "corral-test: kernel-dhcp", "corral-test: udhcpc ok", "reboot: Power down"}
	r := runQEMU(t, s.qemu, args, watch...)
	r.logTimes(t, watch...)
	// With restrict=on QEMU's DHCP server offers no router and no DNS server.
	r.check(t, "IP-Config: Complete", "corral-init: eth0 up mac 52:54:00:12:34:56", "corral-init: eth0 10.0.2.15/24 via",
		"corral-test: kernel-dhcp 10.0.2.15/24", "corral-init: lease eth0 10.0.2.15/24 router", "server 10.0.2.2",
		"corral-test: udhcpc ok", "corral-init: exit status 0")
}

// TestQEMUShell boots to the interactive shell (InitramfsOptions.Shell),
// types two commands on the serial console and checks that leaving the
// shell ends the VM with the shell's status.
func TestQEMUShell(t *testing.T) {
	s := setupQEMU(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Shell: true, NoDHCP: true})
	args := append(s.baseArgs("microvm"), "-initrd", initrd, "-append", s.choice.Cmdline())
	// Typed as soon as /init announces the shell: the console tty buffers the
	// input until the shell reads it, and QEMU only feeds the UART as fast as
	// the guest takes bytes.
	answers := map[string]string{"corral-init: shell": "echo corral-shell-$((6*7)) $(tty)\nexit 3\n"}
	watch := []string{"Run /init", "corral-init: shell", "corral-shell-42", "corral-init: exit status"}
	r := runQEMUInteractive(t, s.qemu, args, answers, watch...)
	r.logTimes(t, watch...)
	r.check(t, "corral-shell-42 /dev/ttyS0", "corral-init: exit status 3 via poweroff")
}

// TestQEMUVirtioNetInitDHCP leaves DHCP to /init: without ip=dhcp the kernel
// does not configure eth0, so /init runs udhcpc and reports the lease.
func TestQEMUVirtioNetInitDHCP(t *testing.T) {
	s := setupQEMU(t)
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: "ip -4 addr show dev eth0 | grep -q 'inet 10.0.2.15/24' && echo corral-test: eth0 configured\n"})
	args := append(s.baseArgs("microvm,pcie=on"),
		"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
		"-initrd", initrd, "-append", s.choice.Cmdline())
	watch := []string{"Run /init", "corral-init: eth0 udhcpc", "corral-init: lease eth0", "corral-test: eth0 configured", "reboot: Power down"}
	r := runQEMU(t, s.qemu, args, watch...)
	r.logTimes(t, watch...)
	r.check(t, "corral-init: eth0 udhcpc", "corral-init: lease eth0 10.0.2.15/24", "server 10.0.2.2",
		"corral-init: eth0 10.0.2.15/24 via", "corral-test: eth0 configured", "corral-init: exit status 0")
	if bytes.Contains(r.console, []byte("IP-Config: Complete")) {
		t.Error("the kernel configured eth0 itself although the command line has no ip=dhcp")
	}
}

// TestQEMUSMP boots two vCPUs and checks that user space sees both and can
// run a process on the second one.
func TestQEMUSMP(t *testing.T) {
	s := setupQEMU(t)
	script := "echo corral-test: nproc $(nproc)\n" +
		"busybox taskset -c 1 busybox awk '{print \"corral-test: ran on cpu \" $39}' /proc/self/stat\n" +
		"read -r online </sys/devices/system/cpu/online && echo corral-test: online $online\n"
	initrd := rootfs.TempInitramfs(t, rootfs.InitramfsOptions{Script: script, NoDHCP: true})
	args := append(s.baseArgsSMP("microvm", 2), "-initrd", initrd, "-append", s.choice.Cmdline())
	watch := []string{"smp: Brought up", "Run /init", "corral-test: nproc", "reboot: Power down"}
	r := runQEMU(t, s.qemu, args, watch...)
	r.logTimes(t, watch...)
	r.check(t, "smp: Brought up 1 node, 2 CPUs", "corral-test: nproc 2", "corral-test: ran on cpu 1", "corral-test: online 0-1", "corral-init: exit status 0")
}
