// Package ctrdtest is the containerd test harness of the shim's tests: it
// starts a private containerd (its own root, state, socket and config;
// never the system's), builds a small OCI image from Debian's
// busybox-static and imports it with ctr. The tests' needs (KVM, root,
// containerd, the shim binary, a guest kernel) skip a test with a reason
// when missing, or fail it when CORRAL_REQUIRE names them, through the
// core module's internal/testenv (this module's path is under the core's,
// so Go lets it import that).
package ctrdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// The needs CORRAL_REQUIRE may name, as internal/testenv spells them.
// containerd and ctr are among the tools scripts/setup.sh installs.
const (
	NeedKVM        = testenv.KVM
	NeedRoot       = testenv.Root
	NeedTools      = testenv.Tools
	NeedContainerd = testenv.Tools
	NeedKernel     = testenv.Kernel
)

// ShimEnv names the containerd-shim-corral-v2 binary the tests run; unset,
// it is looked up on PATH. tests/tcgkvm runs set it (-env).
const ShimEnv = "CORRAL_SHIM"

// ShimBinary is the name containerd looks up on PATH for runtime type
// io.containerd.corral.v2.
const ShimBinary = "containerd-shim-corral-v2"

// Missing ends the test because the host lacks need: it skips with the
// reason, or fails when CORRAL_REQUIRE names need (testenv.Missing).
func Missing(t testing.TB, need, format string, args ...any) {
	t.Helper()
	testenv.Missing(t, need, format, args...)
}

// BinDirEnv names a directory holding the containerd and ctr the tests
// run (build-containerd.sh's output, e.g. containerd 1.7 or 2.x); unset,
// they are looked up on PATH (Debian's 1.6).
const BinDirEnv = "CORRAL_CONTAINERD_BIN_DIR"

// Tools are the containerd commands a test runs, and the daemon's version.
type Tools struct {
	Containerd, Ctr string
	// Version is containerd's, as `containerd --version` gives it
	// ("1.6.20~ds1", "v2.2.9"); Major its major number, which picks the
	// config format (Config, ConfigV3).
	Version string
	Major   int
}

// MustHaveContainerd needs containerd and ctr: in $CORRAL_CONTAINERD_BIN_DIR
// when set (a missing one there fails the test), else on PATH (Debian's
// containerd package).
func MustHaveContainerd(t testing.TB) Tools {
	t.Helper()
	var tl Tools
	dir := os.Getenv(BinDirEnv)
	for _, c := range []struct {
		name string
		p    *string
	}{{"containerd", &tl.Containerd}, {"ctr", &tl.Ctr}} {
		if dir != "" {
			p := filepath.Join(dir, c.name)
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o111 == 0 {
				t.Fatalf("ctrdtest: %s=%s: no executable %s there (shim/internal/ctrdtest/build-containerd.sh VERSION): %v", BinDirEnv, dir, c.name, err)
			}
			*c.p = p
			continue
		}
		p, err := exec.LookPath(c.name)
		if err != nil {
			Missing(t, NeedContainerd, "%s not on PATH (apt-get install -y containerd)", c.name)
		}
		*c.p = p
	}
	out, err := exec.Command(tl.Containerd, "--version").Output()
	if err != nil {
		t.Fatalf("ctrdtest: %s --version: %v", tl.Containerd, err)
	}
	if tl.Version, tl.Major, err = ParseVersion(string(out)); err != nil {
		t.Fatalf("ctrdtest: %v", err)
	}
	return tl
}

// ParseVersion reads the version and its major number from the output of
// `containerd --version`: "containerd PACKAGE VERSION [REVISION]", VERSION
// "v1.7.35", "1.6.20~ds1" (Debian) or "2.2.9".
func ParseVersion(out string) (version string, major int, err error) {
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "containerd" {
		return "", 0, fmt.Errorf("containerd --version gave %q, want \"containerd PACKAGE VERSION ...\"", strings.TrimSpace(out))
	}
	m, _, ok := strings.Cut(strings.TrimPrefix(f[2], "v"), ".")
	if n, err := strconv.Atoi(m); ok && err == nil && n > 0 {
		return f[2], n, nil
	}
	return "", 0, fmt.Errorf("containerd --version gave version %q, want MAJOR.MINOR...", f[2])
}

// MustHaveShim returns the absolute path of the shim binary: $CORRAL_SHIM,
// else containerd-shim-corral-v2 on PATH. Its base name must be
// ShimBinary, since containerd finds it by that name.
func MustHaveShim(t testing.TB) string {
	t.Helper()
	p := os.Getenv(ShimEnv)
	if p == "" {
		var err error
		if p, err = exec.LookPath(ShimBinary); err != nil {
			Missing(t, NeedTools, "no shim binary: set %s or put %s on PATH (cd shim && go build ./cmd/%s)", ShimEnv, ShimBinary, ShimBinary)
		}
	}
	p, err := filepath.Abs(p)
	if err != nil {
		t.Fatalf("ctrdtest: %s: %v", ShimEnv, err)
	}
	if filepath.Base(p) != ShimBinary {
		t.Fatalf("ctrdtest: %s=%s: containerd finds the shim by the name %s", ShimEnv, p, ShimBinary)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("ctrdtest: shim %s is not an executable: %v", p, err)
	}
	return p
}

// MustHaveKernel needs $CORRAL_KERNEL, the guest kernel the shim boots
// when containerd's runtime options name none.
func MustHaveKernel(t testing.TB) string {
	t.Helper()
	k := os.Getenv("CORRAL_KERNEL")
	if k == "" {
		Missing(t, NeedKernel, "needs a Linux guest kernel in $CORRAL_KERNEL (tests/linux/build-kernel.sh --no-patches)")
	}
	if _, err := os.Stat(k); err != nil {
		Missing(t, NeedKernel, "CORRAL_KERNEL: %v", err)
	}
	return k
}

// MustHaveFile needs the file at path (busybox from a package
// scripts/setup.sh installs, or a host file such as /etc/hosts).
func MustHaveFile(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, NeedTools, "%v (on a host: scripts/setup.sh; in tests/tcgkvm: ship it with -host-files)", err)
	}
}
