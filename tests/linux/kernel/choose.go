package kernel

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Env, set to "plain" or "patched", overrides Choose's detection. Every
// user of the rule (tests/e2e, tests/linux's QEMU tests, scripts/run.sh and
// bench/linux-boot.sh through cmd/choosekernel) reads it.
const Env = "CORRAL_LINUX_KERNEL"

// Kinds of test kernel, as Env spells them.
const (
	KindPlain   = "plain"
	KindPatched = "patched"
)

// QEMU -cpu values for booting the test kernel under QEMU beside Corral.
const (
	// QEMUCPUNested is for the nested KVM: a generic model whose Intel
	// vendor string keeps the kernel off an AMD-only x87 path the emulator
	// refuses (docs/nested-kvm.md).
	QEMUCPUNested = "qemu64,vendor=GenuineIntel"
	// QEMUCPUHost is for hardware KVM.
	QEMUCPUHost = "host"
)

// Choice says which test kernel, command line and QEMU CPU model suit a host.
type Choice struct {
	// Patched selects the nested-KVM test kernel (tests/linux/patches) and
	// CmdlineNested; false selects the plain kernel and CmdlinePlain.
	Patched bool
	// Reason says what the choice rests on, for logs.
	Reason string
}

// Kind is KindPatched or KindPlain.
func (c Choice) Kind() string {
	if c.Patched {
		return KindPatched
	}
	return KindPlain
}

// Cmdline is the kernel command line for the chosen kernel.
func (c Choice) Cmdline() string { return Cmdline(c.Patched) }

// QEMUCPU is the QEMU -cpu value for booting the chosen kernel.
func (c Choice) QEMUCPU() string {
	if c.Patched {
		return QEMUCPUNested
	}
	return QEMUCPUHost
}

// BuildHint is the command that builds the chosen kernel, for messages.
func (c Choice) BuildHint() string {
	if c.Patched {
		return "tests/linux/build-kernel.sh"
	}
	return "tests/linux/build-kernel.sh --no-patches"
}

// ChooseHost applies Choose to this machine with Env's value.
func ChooseHost() (Choice, error) { return Choose(os.Getenv(Env), "/") }

// Choose decides whether a host needs the patched test kernel. override is
// Env's value ("", "plain" or "patched"); root is the file-system root to
// inspect ("/" on a real host). The rule, first match wins:
//
//  1. override = plain or patched: that kernel.
//  2. The kvm_pvm module is loaded (/sys/module/kvm_pvm): /dev/kvm is nested
//     through PVM and guest ring 0 runs in KVM's instruction emulator
//     (docs/nested-kvm.md): patched.
//  3. kvm_intel or kvm_amd is loaded: hardware KVM: plain.
//  4. Otherwise (KVM built in, modules not visible): plain if the CPU flags
//     in /proc/cpuinfo show vmx or svm (hardware virtualization that KVM
//     uses), patched if they show neither (a KVM without VT-x/AMD-V must be
//     a software-assisted one like PVM).
func Choose(override, root string) (Choice, error) {
	switch override {
	case KindPlain:
		return Choice{Patched: false, Reason: Env + "=plain"}, nil
	case KindPatched:
		return Choice{Patched: true, Reason: Env + "=patched"}, nil
	case "":
	default:
		return Choice{}, fmt.Errorf("kernel: %s=%q: want plain or patched", Env, override)
	}
	exists := func(p string) bool {
		_, err := os.Stat(filepath.Join(root, p))
		return err == nil
	}
	if exists("sys/module/kvm_pvm") {
		return Choice{Patched: true, Reason: "kvm_pvm is loaded: nested KVM, guest ring 0 is emulated"}, nil
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if exists("sys/module/" + m) {
			return Choice{Patched: false, Reason: m + " is loaded: hardware KVM"}, nil
		}
	}
	info, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		return Choice{}, fmt.Errorf("kernel: no KVM vendor module visible and cannot read cpuinfo: %w", err)
	}
	if hasCPUFlag(info, "vmx") || hasCPUFlag(info, "svm") {
		return Choice{Patched: false, Reason: "cpuinfo shows vmx/svm and kvm_pvm is not loaded: hardware KVM"}, nil
	}
	return Choice{Patched: true, Reason: "cpuinfo shows neither vmx nor svm: KVM without hardware virtualization (nested)"}, nil
}

// hasCPUFlag reports whether the first "flags" line of cpuinfo lists flag.
func hasCPUFlag(cpuinfo []byte, flag string) bool {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(k) != "flags" {
			continue
		}
		for _, f := range strings.Fields(v) {
			if f == flag {
				return true
			}
		}
		return false
	}
	return false
}

// HostCmdline is the command line the test kernel this host needs
// (ChooseHost) boots with, plus $CORRAL_TCGKVM_CMDLINE's parameters: what a
// test that boots the test kernel passes, whether it found the kernel in
// $CORRAL_KERNEL or with FindHost.
func HostCmdline() (string, error) {
	c, err := ChooseHost()
	if err != nil {
		return "", err
	}
	return AppendCmdline(c.Cmdline(), os.Getenv(ExtraCmdlineEnv)), nil
}

// FindHost returns the cached vmlinux of the test kernel this host needs
// (ChooseHost: the patched one on a nested KVM, where the plain one stops
// in its boot self-test) and the choice; the error wraps ErrNotBuilt when
// it is not in the cache.
func FindHost() (vmlinux string, c Choice, err error) {
	if c, err = ChooseHost(); err != nil {
		return "", c, err
	}
	_, vmlinux, err = Find(c.Patched)
	return vmlinux, c, err
}
