// Package require decides what a test does when the host lacks something it
// needs: it skips, saying why, unless CORRAL_REQUIRE names that need, and
// then it fails, so a run that must exercise KVM, root or QEMU cannot pass
// by skipping. Package internal/testenv builds its checks on it; only
// packages that testenv itself imports (kvm) use require directly.
package require

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Env is the environment variable listing what a run requires, separated by
// commas: "kvm,root,qemu,tools,kernel".
const Env = "CORRAL_REQUIRE"

// The needs CORRAL_REQUIRE may name.
const (
	KVM   = "kvm"   // a usable /dev/kvm
	Root  = "root"  // root, with network namespaces and /dev/net/tun
	QEMU  = "qemu"  // qemu-system-x86_64 on PATH
	Tools = "tools" // every command and file that scripts/setup.sh installs
	// Kernel is a Linux guest kernel for the agent's tests: $CORRAL_KERNEL,
	// or the test kernel tests/linux/build-kernel.sh cached.
	Kernel = "kernel"
)

// Parse reads a CORRAL_REQUIRE value: needs separated by commas, blanks
// ignored. It rejects names it does not know, so a typo cannot quietly let
// tests skip.
func Parse(s string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch f {
		case "":
		case KVM, Root, QEMU, Tools, Kernel:
			set[f] = true
		default:
			return nil, fmt.Errorf("%s=%q: unknown need %q (want a comma list of %s, %s, %s, %s, %s)", Env, s, f, KVM, Root, QEMU, Tools, Kernel)
		}
	}
	return set, nil
}

// Missing ends the test because the host lacks need (one of the names
// above); reason says what exactly is missing and how to get it. The test
// skips, or fails when CORRAL_REQUIRE names need or cannot be parsed.
func Missing(t testing.TB, need, format string, args ...any) {
	t.Helper()
	missing(t, os.Getenv(Env), need, fmt.Sprintf(format, args...))
}

func missing(t testing.TB, env, need, reason string) {
	t.Helper()
	set, err := Parse(env)
	if err != nil {
		t.Fatalf("%v", err)
	}
	if set[need] {
		t.Fatalf("%s=%s requires %s: %s", Env, env, need, reason)
	}
	t.Skipf("skipping: %s (%s=%s would make this a failure)", reason, Env, need)
}
