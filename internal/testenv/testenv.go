// Package testenv checks what a test needs from the host (KVM, root, QEMU,
// commands from Debian packages), as Go's own internal/testenv does. A test
// whose need is missing skips, saying why; when CORRAL_REQUIRE names the
// need (see package require) it fails instead, so CI cannot pass by
// skipping.
package testenv

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv/require"
	"github.com/corral-vmm/corral/kvm"
)

// The needs CORRAL_REQUIRE may name.
const (
	KVM    = require.KVM
	Root   = require.Root
	QEMU   = require.QEMU
	Tools  = require.Tools
	Kernel = require.Kernel
)

// QEMUBinary is the QEMU system emulator the comparison tests run.
const QEMUBinary = "qemu-system-x86_64"

// Missing ends the test because the host lacks need: it skips with the
// reason, or fails when CORRAL_REQUIRE names need.
func Missing(t testing.TB, need, format string, args ...any) {
	t.Helper()
	require.Missing(t, need, format, args...)
}

// MustHaveKVM opens /dev/kvm as a machine would (API version and every
// capability Corral needs). Where the device cannot be opened the test
// skips (fails with CORRAL_REQUIRE=kvm); any other error, such as a missing
// capability, fails it: that host has KVM and Corral cannot use it.
func MustHaveKVM(t testing.TB) {
	t.Helper()
	mustHaveKVMAt(t, kvm.DevicePath)
}

func mustHaveKVMAt(t testing.TB, path string) {
	t.Helper()
	s, err := kvm.Open(path)
	if errors.Is(err, kvm.ErrUnavailable) {
		Missing(t, KVM, "needs %s: %v", path, err)
	}
	if err != nil {
		t.Fatalf("KVM is present but Corral cannot use it: %v", err)
	}
	s.Close()
}

// MustHaveRoot needs an effective user ID of 0: the test makes network
// namespaces, TAP devices or installs packages.
func MustHaveRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, Root, "needs root (network namespaces, TAP devices)")
	}
}

// MustHaveTUN needs root and /dev/net/tun, to create TAP devices.
func MustHaveTUN(t testing.TB) {
	t.Helper()
	MustHaveRoot(t)
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		Missing(t, Root, "needs /dev/net/tun (modprobe tun): %v", err)
	}
}

// MustHaveQEMU returns the path of qemu-system-x86_64 on PATH. It does not
// check for KVM: tests that pass -enable-kvm call MustHaveKVM too.
func MustHaveQEMU(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath(QEMUBinary)
	if err != nil {
		Missing(t, QEMU, "%s not on PATH (apt-get install -y qemu-system-x86)", QEMUBinary)
	}
	return p
}

// MustHaveCommand returns the path of command name, looked up on PATH and
// then in /usr/sbin and /sbin (debugfs and mkfs.ext4 live there, off a
// normal user's PATH); pkg is the Debian package that provides it.
func MustHaveCommand(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin/", "/sbin/"} {
		if fi, err := os.Stat(dir + name); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return dir + name
		}
	}
	Missing(t, Tools, "%s not found on PATH, in /usr/sbin or /sbin (apt-get install -y %s)", name, pkg)
	return ""
}

// MustHaveFile needs the file at path, from Debian package pkg.
func MustHaveFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, Tools, "%v (apt-get install -y %s)", err, pkg)
	}
}

// LoopDevice attaches file to a free loop device and returns the device's
// path; it is detached when the test ends. The test skips (fails with
// CORRAL_REQUIRE=root) without root, losetup or a free loop device.
func LoopDevice(t testing.TB, file string) string {
	t.Helper()
	MustHaveRoot(t)
	losetup := MustHaveCommand(t, "losetup", "mount")
	// "losetup -f" then "losetup DEV FILE", which util-linux and busybox
	// both take (busybox has no --show); another test may take the same
	// free device in between, so try again a few times.
	var dev string
	for try := 0; ; try++ {
		out, err := exec.Command(losetup, "-f").CombinedOutput()
		if err != nil {
			Missing(t, Root, "no free loop device: losetup -f: %v: %s", err, bytes.TrimSpace(out))
		}
		dev = strings.TrimSpace(string(out))
		out, err = exec.Command(losetup, dev, file).CombinedOutput()
		if err == nil {
			break
		}
		if try == 9 {
			Missing(t, Root, "no loop device: losetup %s %s: %v: %s", dev, file, err, bytes.TrimSpace(out))
		}
	}
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev
}
