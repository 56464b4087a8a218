// Package netnstest runs test code inside a fresh network namespace, so
// tests can create TAP devices, addresses and sockets without touching the
// host's network.
package netnstest

import (
	"runtime"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Run calls fn on the calling goroutine's OS thread, locked and moved into
// a fresh network namespace with loopback up, then moves the thread back.
// TAP descriptors, netlink handles and sockets opened inside stay bound to
// the namespace whichever thread later uses them. Skips the test, saying
// why, without root or /dev/net/tun (fails it with CORRAL_REQUIRE=root).
func Run(t testing.TB, fn func()) {
	t.Helper()
	testenv.MustHaveTUN(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	ns, err := netns.New()
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		testenv.Missing(t, testenv.Root, "cannot create a network namespace: %v", err)
	}
	defer func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when the
			// goroutine ends rather than reuse it in the wrong namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	}()
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	fn()
}
