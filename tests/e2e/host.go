// Package e2e holds Corral's end-to-end tests with a stock Linux kernel:
// the test kernel of tests/linux boots under Corral (as PVH vmlinux and as
// bzImage) with busybox user space, virtio-blk disks and a virtio-net NIC on
// a TAP that Corral creates, and the tests check what the kernel and /init
// print on the console and what is left on the host afterwards.
//
// The tests skip, saying why, without /dev/kvm, root (for the network
// namespace and TAP), busybox-static, mkfs.ext4 or the built kernel. A
// missing kernel is built (minutes) only when BuildEnv is "1":
//
//	CORRAL_BUILD_KERNEL=1 go test -v -timeout 30m ./tests/e2e/
//
// This file holds the rule that picks the test kernel for the host.
package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables the tests read.
const (
	// BuildEnv, set to "1", lets the tests build a missing test kernel with
	// kernel.Build (5–10 minutes on two cores); otherwise they skip.
	BuildEnv = "CORRAL_BUILD_KERNEL"
	// KernelEnv, set to "plain" or "patched", overrides ChooseKernel's
	// detection (the same variable tests/linux's QEMU tests read).
	KernelEnv = "CORRAL_LINUX_KERNEL"
	// ConsoleEnv, set to "1", logs every boot's whole console and Corral's
	// log (a failed boot's console tail is logged anyway).
	ConsoleEnv = "CORRAL_E2E_CONSOLE"
)

// KernelChoice says which test kernel and command line suit the host.
type KernelChoice struct {
	// Patched selects the nested-KVM test kernel (tests/linux/patches) and
	// kernel.CmdlineNested; false selects the plain kernel and
	// kernel.CmdlinePlain.
	Patched bool
	// Reason says what the choice rests on, for the test log.
	Reason string
}

// ChooseKernel decides whether this host needs the patched test kernel.
// override is KernelEnv's value ("", "plain" or "patched"); root is the
// file-system root to inspect ("/" on a real host). The rule, first match
// wins:
//
//  1. KernelEnv = plain or patched: that kernel.
//  2. The kvm_pvm module is loaded (/sys/module/kvm_pvm): /dev/kvm is
//     nested through PVM, guest ring 0 runs in KVM's instruction emulator
//     (see /work/shared/kvm-here.md): patched.
//  3. kvm_intel or kvm_amd is loaded: hardware KVM: plain.
//  4. Otherwise (KVM built in, modules not visible): plain if the CPU flags
//     in /proc/cpuinfo show vmx or svm (hardware virtualization that KVM
//     uses), patched if they show neither (a KVM without VT-x/AMD-V must be
//     a software-assisted one like PVM).
func ChooseKernel(override, root string) (KernelChoice, error) {
	switch override {
	case "plain":
		return KernelChoice{Patched: false, Reason: KernelEnv + "=plain"}, nil
	case "patched":
		return KernelChoice{Patched: true, Reason: KernelEnv + "=patched"}, nil
	case "":
	default:
		return KernelChoice{}, fmt.Errorf("e2e: %s=%q: want plain or patched", KernelEnv, override)
	}
	exists := func(p string) bool {
		_, err := os.Stat(filepath.Join(root, p))
		return err == nil
	}
	if exists("sys/module/kvm_pvm") {
		return KernelChoice{Patched: true, Reason: "kvm_pvm is loaded: nested KVM, guest ring 0 is emulated"}, nil
	}
	for _, m := range []string{"kvm_intel", "kvm_amd"} {
		if exists("sys/module/" + m) {
			return KernelChoice{Patched: false, Reason: m + " is loaded: hardware KVM"}, nil
		}
	}
	info, err := os.ReadFile(filepath.Join(root, "proc/cpuinfo"))
	if err != nil {
		return KernelChoice{}, fmt.Errorf("e2e: no KVM vendor module visible and cannot read cpuinfo: %w", err)
	}
	if hasCPUFlag(info, "vmx") || hasCPUFlag(info, "svm") {
		return KernelChoice{Patched: false, Reason: "cpuinfo shows vmx/svm and kvm_pvm is not loaded: hardware KVM"}, nil
	}
	return KernelChoice{Patched: true, Reason: "cpuinfo shows neither vmx nor svm: KVM without hardware virtualization (nested)"}, nil
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
