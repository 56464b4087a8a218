package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/linux/kernel"
	"github.com/corral-vmm/corral/tests/linux/rootfs"
)

// bootTimeout bounds one Linux boot. On the nested KVM of the development
// machines guest ring 0 runs in KVM's instruction emulator and a boot to
// user space takes about a minute; on hardware KVM a few seconds.
const bootTimeout = 5 * time.Minute

// buildTimeout bounds building the test kernel (5–10 minutes on two cores).
const buildTimeout = 40 * time.Minute

// testKernel is the Linux kernel the tests boot and its command line.
type testKernel struct {
	bzImage string // x86 boot-protocol image; "" if not given (see kernelFor)
	vmlinux string // ELF with the PVH entry note; "" if not given
	patched bool   // the nested-KVM test kernel
	cmdline string // kernel.CmdlineNested or kernel.CmdlinePlain, plus $CORRAL_TCGKVM_CMDLINE
}

// setupLinux checks what a Linux boot needs and returns the kernel to boot:
// it skips the test without /dev/kvm or busybox, picks the patched or plain
// kernel for this host (kernel.Choose), and takes it from $CORRAL_KERNEL
// (and $CORRAL_BZIMAGE: tests/tcgkvm sets both in its VM, which has no
// source tree or cache), else finds it in the cache or, with
// CORRAL_BUILD_KERNEL=1, builds it.
func setupLinux(t *testing.T) testKernel {
	t.Helper()
	testenv.MustHaveKVM(t)
	testenv.MustHaveFile(t, rootfs.DefaultBusybox, "busybox-static")
	choice, err := kernel.ChooseHost()
	if err != nil {
		t.Fatal(err)
	}
	variant := choice.Kind()
	given, ok, err := kernel.FromEnv(os.Getenv)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		k := testKernel{bzImage: given.BzImage, vmlinux: given.Vmlinux, patched: choice.Patched,
			cmdline: kernel.AppendCmdline(choice.Cmdline(), given.Extra)}
		t.Logf("kernel: $%s=%s, $%s=%q, booted as the %s kernel (%s); command line %q",
			kernel.KernelEnv, os.Getenv(kernel.KernelEnv), kernel.BzImageEnv, given.BzImage, variant, choice.Reason, k.cmdline)
		return k
	}
	bz, vmlinux, err := kernel.Find(choice.Patched)
	if errors.Is(err, kernel.ErrNotBuilt) {
		if os.Getenv(BuildEnv) != "1" {
			t.Skipf("skipping: the %s test kernel is not built; run %s (or set %s=1 to let the tests build it, 5-10 minutes): %v",
				variant, choice.BuildHint(), BuildEnv, err)
		}
		t.Logf("building the %s test kernel (%s=1); this takes minutes", variant, BuildEnv)
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		var log bytes.Buffer
		start := time.Now()
		bz, vmlinux, err = kernel.Build(ctx, choice.Patched, &log)
		if err != nil {
			t.Fatalf("building the test kernel: %v\nlast output:\n%s", err, tail(log.String(), 4000))
		}
		t.Logf("built the %s test kernel in %.0fs", variant, time.Since(start).Seconds())
	} else if err != nil {
		t.Fatal(err)
	}
	k := testKernel{bzImage: bz, vmlinux: vmlinux, patched: choice.Patched, cmdline: choice.Cmdline()}
	t.Logf("kernel: %s (%s); command line %q", variant, choice.Reason, k.cmdline)
	return k
}

// needVmlinux returns the PVH vmlinux, ending the test (skip, or failure
// with CORRAL_REQUIRE=tools) when the environment named only a bzImage.
func (k testKernel) needVmlinux(t *testing.T) string {
	t.Helper()
	if k.vmlinux == "" {
		testenv.Missing(t, testenv.Tools, "needs the test kernel's vmlinux (PVH): $%s is a bzImage", kernel.KernelEnv)
	}
	return k.vmlinux
}

// needBzImage returns the bzImage, ending the test (skip, or failure with
// CORRAL_REQUIRE=tools) when the environment named only a vmlinux.
func (k testKernel) needBzImage(t *testing.T) string {
	t.Helper()
	if k.bzImage == "" {
		testenv.Missing(t, testenv.Tools, "needs the test kernel's bzImage: $%s is a vmlinux and $%s is not set (tests/tcgkvm ships the bzImage beside a build-kernel.sh vmlinux)",
			kernel.KernelEnv, kernel.BzImageEnv)
	}
	return k.bzImage
}

// writeExt4 builds an ext4 image with the test root file system (or, with
// a non-empty dir, a copy of dir) into the test's temporary directory,
// skipping the test if mkfs.ext4 is missing.
func writeExt4(t *testing.T, name string, sizeMiB int, opts rootfs.InitramfsOptions, dir string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	var err error
	if dir != "" {
		err = rootfs.BuildExt4FromDir(p, sizeMiB, dir)
	} else {
		err = rootfs.BuildExt4(p, sizeMiB, opts)
	}
	if errors.Is(err, rootfs.ErrMkfsMissing) {
		testenv.Missing(t, testenv.Tools, "%v (apt-get install -y e2fsprogs; in tests/tcgkvm: -host-files %s)", err, tcgkvmHostFiles)
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// writePatternDisk writes a raw disk image of size bytes whose every 8-byte
// word holds its own offset, and returns its path and MD5 (hex).
func writePatternDisk(t *testing.T, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	for off := 0; off+8 <= size; off += 8 {
		binary.LittleEndian.PutUint64(b[off:], uint64(off))
	}
	p := filepath.Join(t.TempDir(), "pattern.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	return p, hex.EncodeToString(sum[:])
}

// debugfsPath finds debugfs (e2fsprogs), skipping the test if it is missing.
func debugfsPath(t *testing.T) string {
	t.Helper()
	return testenv.MustHaveCommand(t, "debugfs", "e2fsprogs; in tests/tcgkvm: -host-files "+tcgkvmHostFiles)
}

// debugfsCat reads a file from an ext4 image with debugfs.
func debugfsCat(t *testing.T, image, path string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(debugfsPath(t), "-R", "cat "+path, image)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("debugfs -R 'cat %s' %s: %v: %s", path, image, err, stderr.Bytes())
	}
	return out
}

// tail returns at most the last n bytes of s, marked when cut.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("[... %d bytes before ...]\n%s", len(s)-n, s[len(s)-n:])
}
