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
// The rule that picks the test kernel for the host is kernel.Choose
// (tests/linux/kernel); docs/nested-kvm.md says why there are two kernels.
package e2e

// Environment variables the tests read (and kernel.Env, which overrides the
// choice of test kernel: tests/linux/kernel.Choose).
const (
	// BuildEnv, set to "1", lets the tests build a missing test kernel with
	// kernel.Build (5–10 minutes on two cores); otherwise they skip.
	BuildEnv = "CORRAL_BUILD_KERNEL"
	// ConsoleEnv, set to "1", logs every boot's whole console and Corral's
	// log (a failed boot's console tail is logged anyway).
	ConsoleEnv = "CORRAL_E2E_CONSOLE"
)

// tcgkvmHostFiles is the tests/tcgkvm -host-files value that ships the host
// tools these tests run (mkfs.ext4 for the root and data images, debugfs
// to read the root image afterwards) into its VM, which has only busybox.
const tcgkvmHostFiles = "mkfs.ext4,debugfs,/etc/mke2fs.conf"
