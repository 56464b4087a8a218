package rootfs

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
)

// requireFile returns path if it exists; otherwise, when running as root, it
// tries `apt-get install -y pkg` once, and skips the test if that fails
// (fails it with CORRAL_REQUIRE=tools).
func requireFile(t *testing.T, path, pkg string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if os.Geteuid() != 0 {
		testenv.Missing(t, testenv.Tools, "%s missing and not root to install Debian package %s", path, pkg)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		testenv.Missing(t, testenv.Tools, "%s missing and no apt-get to install Debian package %s", path, pkg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "--no-install-recommends", pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		testenv.Missing(t, testenv.Tools, "%s missing and apt-get install %s failed: %v\n%s", path, pkg, err, out)
	}
	if _, err := os.Stat(path); err != nil {
		testenv.Missing(t, testenv.Tools, "%s still missing after installing %s", path, pkg)
	}
	return path
}

func requireBusybox(t *testing.T) string {
	t.Helper()
	return requireFile(t, DefaultBusybox, "busybox-static")
}

// requireSbin finds an e2fsprogs tool such as debugfs, installing the package if needed.
func requireSbin(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/" + name, "/sbin/" + name} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return requireFile(t, "/usr/sbin/"+name, "e2fsprogs")
}
