package tap

import (
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// needRoot skips tests that make network namespaces and TAP devices.
func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates a network namespace (CAP_SYS_ADMIN) and TAP devices in it (CAP_NET_ADMIN)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun (modprobe tun): %v", err)
	}
}

// inNetns runs fn on this goroutine's OS thread, locked and moved into a
// fresh network namespace, then moves the thread back. Everything fn
// creates (TAPs, bridges, addresses) lives and dies in that namespace; the
// namespace goes when its last reference (the handle, open sockets and
// TAP descriptors) is gone. netlink handles and /dev/net/tun descriptors
// opened inside stay bound to it whichever thread later uses them.
func inNetns(t testing.TB, fn func(ns netns.NsHandle)) {
	t.Helper()
	needRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("current netns: %v", err)
	}
	ns, err := netns.New() // unshare(CLONE_NEWNET) for this thread
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace: %v", err)
	}
	defer func() {
		ns.Close()
		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: the runtime discards it when this
			// goroutine ends, instead of reusing it in the wrong namespace.
			t.Errorf("restore netns: %v", err)
			return
		}
		orig.Close()
		runtime.UnlockOSThread()
	}()
	// Loopback up, as a namespace's processes expect.
	if lo, err := netlink.LinkByName("lo"); err == nil {
		netlink.LinkSetUp(lo)
	}
	fn(ns)
}

// waitGone waits (bounded) until no link called name exists: a TAP
// disappears when its descriptor closes.
func waitGone(t testing.TB, h *netlink.Handle, name string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := h.LinkByName(name); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s still exists 10s after Close", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
