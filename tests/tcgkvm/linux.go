package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/corral-vmm/corral/agent/initrd"
	"github.com/corral-vmm/corral/tests/linux/kernel"
)

// Files for Linux guest tests: the test kernel and a static guest agent,
// shipped into the VM so tests there boot a Linux L2 guest.
const (
	vmLinuxDir = "/linux"
	vmAgent    = vmLinuxDir + "/corral-agent"
	vmBzImage  = vmLinuxDir + "/bzImage"
)

// Environment inside the VM for Linux guest tests. CORRAL_KERNEL and
// CORRAL_AGENT are the variables corral exec and the agent packages read.
const (
	envKernel        = "CORRAL_KERNEL"
	envAgent         = "CORRAL_AGENT"
	envTCGKVM        = "CORRAL_TCGKVM"         // "1" inside the VM
	envTCGKVMCmdline = "CORRAL_TCGKVM_CMDLINE" // what Linux L2 guests should add to their command line here
	envBzImage       = "CORRAL_BZIMAGE"        // the bzImage of $CORRAL_KERNEL, for boot-protocol tests (tests/e2e)
)

// Values of -linux-kernel and -agent besides a path.
const (
	pickAuto = "auto"
	pickNone = "none"
)

// pick resolves a -linux-kernel or -agent flag: "none" ships nothing;
// "auto" takes $env if set, else what find returns (find may return "" for
// "not available", which is not an error); anything else is a path that
// must exist.
func pick(flagValue, env string, find func() (string, error)) (string, error) {
	switch flagValue {
	case pickNone:
		return "", nil
	case pickAuto, "":
		if v := os.Getenv(env); v != "" {
			if _, err := os.Stat(v); err != nil {
				return "", fmt.Errorf("$%s: %w", env, err)
			}
			return v, nil
		}
		return find()
	default:
		if _, err := os.Stat(flagValue); err != nil {
			return "", err
		}
		return flagValue, nil
	}
}

// findTestKernel returns the cached plain test kernel (the one Linux guest
// tests boot), or "" when tests/linux/build-kernel.sh has not built it.
func findTestKernel() (string, error) {
	_, vmlinux, err := kernel.Find(false)
	if errors.Is(err, kernel.ErrNotBuilt) {
		return "", nil
	}
	return vmlinux, err
}

// linuxFiles resolves the -linux-kernel and -agent flags and checks the
// agent is static (the VM has no libc). Missing files with "auto" are not
// an error: Linux guest tests then skip in the VM as they would on a host
// without them.
func linuxFiles(ctx context.Context, o options) (kernelPath, agentPath string, err error) {
	kernelPath, err = pick(o.linuxKernel, envKernel, findTestKernel)
	if err != nil {
		return "", "", fmt.Errorf("tcgkvm: -linux-kernel: %w", err)
	}
	agentPath, err = pick(o.agent, envAgent, func() (string, error) {
		if kernelPath == "" {
			return "", nil // no Linux guest to run it in: skip the build
		}
		return initrd.BuildAgent(ctx, filepath.Join(o.cache, "agent"))
	})
	if err != nil {
		return "", "", fmt.Errorf("tcgkvm: -agent: %w", err)
	}
	if agentPath != "" {
		b, err := os.ReadFile(agentPath)
		if err != nil {
			return "", "", fmt.Errorf("tcgkvm: -agent: %w", err)
		}
		if err := initrd.CheckAgent(b); err != nil {
			return "", "", fmt.Errorf("tcgkvm: -agent %s: %w", agentPath, err)
		}
	}
	return kernelPath, agentPath, nil
}

// bzImageBeside returns the bzImage that tests/linux/build-kernel.sh puts
// beside a vmlinux in its cache directory, or "" if kernelPath is not such
// a vmlinux: tests of the boot protocol (tests/e2e) need the same kernel
// as a bzImage.
func bzImageBeside(kernelPath string) string {
	if kernelPath == "" || filepath.Base(kernelPath) != "vmlinux" {
		return ""
	}
	p := filepath.Join(filepath.Dir(kernelPath), "bzImage")
	if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	return p
}

// requireKernel adds the kernel need to a CORRAL_REQUIRE value when a
// Linux kernel is shipped: the Linux guest tests then fail in the VM
// rather than skip for want of one.
func requireKernel(require, linuxKernel string) string {
	if linuxKernel == "" {
		return require
	}
	for _, n := range strings.Split(require, ",") {
		if strings.TrimSpace(n) == "kernel" {
			return require
		}
	}
	if strings.TrimSpace(require) == "" {
		return "kernel"
	}
	return require + ",kernel"
}
