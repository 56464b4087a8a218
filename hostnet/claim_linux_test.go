package hostnet_test

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/hostnet"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/virtio/virtionet/tap"
)

// childEnv makes the test binary a claimer process (TestClaimChild).
const childEnv = "HOSTNET_TEST_CHILD"

var base = netip.MustParsePrefix(hostnet.DefaultBase)

// claimTap claims a subnet and opens a TAP with its .1, as `--net auto` does.
func claimTap(dir string) (*tap.Tap, netip.Prefix, error) {
	var t *tap.Tap
	sub, err := hostnet.ClaimSubnet(dir, base, func(sub netip.Prefix) (err error) {
		t, err = tap.Open(tap.Config{Address: netip.PrefixFrom(sub.Addr().Next(), sub.Bits())})
		return err
	})
	return t, sub, err
}

// TestClaimChild is a claimer process of TestClaimSubnetAcrossProcesses:
// it waits for the go line on stdin, claims a subnet with a TAP, prints
// it, and holds the TAP until stdin closes.
func TestClaimChild(t *testing.T) {
	if os.Getenv(childEnv) != "claim" {
		t.Skip("run by TestClaimSubnetAcrossProcesses")
	}
	netnstest.AwaitGo()
	tp, sub, err := claimTap(os.Getenv(hostnet.StateDirEnv))
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("subnet %v\n", sub)
	netnstest.Hold()
	tp.Close()
	os.Exit(0)
}

// Twenty processes claim at once in one network namespace: every subnet
// differs. Without the lock, the address dump of one and the address add
// of another interleave and some get the same /24.
func TestClaimSubnetAcrossProcesses(t *testing.T) {
	const procs = 20
	dir := t.TempDir()
	netnstest.Run(t, func() {
		lines, release := netnstest.Together(t, procs, "TestClaimChild", childEnv+"=claim", hostnet.StateDirEnv+"="+dir)
		defer release()
		seen := map[string]int{}
		for i, line := range lines {
			sub, ok := strings.CutPrefix(line, "subnet ")
			if !ok {
				t.Fatalf("child %d: %q", i, line)
			}
			if j, dup := seen[sub]; dup {
				t.Errorf("children %d and %d both got %s", j, i, sub)
			}
			seen[sub] = i
		}
		if t.Failed() {
			return
		}
		release()
		// Their TAPs went with them.
		waitNoTaps(t)
	})
}

// waitNoTaps waits until no TAP is left in the namespace.
func waitNoTaps(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, l := range links {
			if _, ok := l.(*netlink.Tuntap); ok {
				n++
			}
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d TAPs left behind", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With N TAPs already up, a claim costs one address dump and one TAP: its
// time must not grow with N. Logs the times for N = 0 and N = 150, and
// checks that the base is exhausted at DefaultSubnets with ErrExhausted.
func TestClaimSubnetScales(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 256 TAPs")
	}
	dir := t.TempDir()
	netnstest.Run(t, func() {
		var taps []*tap.Tap
		defer func() {
			for _, tp := range taps {
				tp.Close()
			}
		}()
		timeClaim := func() time.Duration {
			// The median of 5, so one slow scheduling slot on a busy host
			// does not decide.
			var ds []time.Duration
			for range 5 {
				t0 := time.Now()
				tp, _, err := claimTap(dir)
				ds = append(ds, time.Since(t0))
				if err != nil {
					t.Fatal(err)
				}
				taps = append(taps, tp)
			}
			for i := range ds {
				for j := i + 1; j < len(ds); j++ {
					if ds[j] < ds[i] {
						ds[i], ds[j] = ds[j], ds[i]
					}
				}
			}
			return ds[2]
		}
		empty := timeClaim()
		for len(taps) < 150 {
			tp, _, err := claimTap(dir)
			if err != nil {
				t.Fatal(err)
			}
			taps = append(taps, tp)
		}
		busy := timeClaim()
		t.Logf("claim with %d TAPs up: %v; with 155: %v", 0, empty, busy)
		if busy > 10*empty+20*time.Millisecond {
			t.Errorf("a claim takes %v with 155 TAPs against %v with none", busy, empty)
		}
		for len(taps) < hostnet.DefaultSubnets {
			tp, _, err := claimTap(dir)
			if err != nil {
				t.Fatalf("claim %d: %v", len(taps), err)
			}
			taps = append(taps, tp)
		}
		if _, _, err := claimTap(dir); err == nil || !strings.Contains(err.Error(), "all 256 /24 subnets of 10.200.0.0/16 are in use") {
			t.Fatalf("claim %d: %v", len(taps)+1, err)
		}
	})
}
