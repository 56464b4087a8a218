package tap

import (
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNetns runs fn on this goroutine's OS thread inside a fresh network
// namespace (internal/netnstest). Everything fn creates (TAPs, bridges,
// addresses) lives and dies in that namespace; netlink handles and
// /dev/net/tun descriptors opened inside stay bound to it whichever thread
// later uses them. fn gets no handle: no test needs one.
func inNetns(t testing.TB, fn func(ns netns.NsHandle)) {
	t.Helper()
	netnstest.Run(t, func() { fn(netns.None()) })
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
