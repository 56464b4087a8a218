// Package benchconfine runs a device package's benchmarks confined as a
// running VMM is (sandbox.Apply's default policy: the seccomp filter,
// Landlock, no capabilities), so the cost of confinement is measured on the
// device paths themselves (issue 16; bench/device-confined.sh runs each
// test binary with and without it, interleaved).
package benchconfine

import (
	"fmt"
	"os"
	"testing"
)

// Env names the variable that turns confinement on for a test binary
// whose TestMain calls Main: "on" confines, "" or "off" does not.
const Env = "CORRAL_BENCH_CONFINE"

// Main confines the process when Env says so, then runs m and exits with
// its status. A test binary that cannot be confined exits 2 saying why.
func Main(m *testing.M) {
	switch v := os.Getenv(Env); v {
	case "", "off":
	case "on":
		msg, err := confine()
		if err != nil {
			fmt.Fprintf(os.Stderr, "benchconfine: %v\n", err)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "benchconfine: %s\n", msg)
	default:
		fmt.Fprintf(os.Stderr, "benchconfine: %s=%q: want on or off\n", Env, v)
		os.Exit(2)
	}
	os.Exit(m.Run())
}
