package hostnet_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/hostnet"
	"github.com/corral-vmm/corral/internal/netnstest"
)

// addBridge creates bridge br0 with addr (if valid) in the test namespace.
func addBridge(t *testing.T, addr netip.Prefix) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	if addr.IsValid() {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: addr.Addr().AsSlice(), Mask: net.CIDRMask(addr.Bits(), 32)}}
		if err := netlink.AddrAdd(br, a); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLookupBridge(t *testing.T) {
	netnstest.Run(t, func() {
		addBridge(t, netip.MustParsePrefix("10.77.0.1/24"))
		br, err := hostnet.LookupBridge("br0")
		if err != nil || br.Addr != netip.MustParsePrefix("10.77.0.1/24") || len(br.MAC) != 6 {
			t.Fatalf("LookupBridge(br0) = %+v, %v", br, err)
		}
		for name, want := range map[string]string{"nobr": "does not exist", "lo": "lo is not a bridge"} {
			if _, err := hostnet.LookupBridge(name); !errors.Is(err, hostnet.ErrNoBridge) || !strings.Contains(err.Error(), want) {
				t.Errorf("LookupBridge(%s): %v, want %q", name, err, want)
			}
		}
	})
}

// Two VMs on one bridge get different MACs and addresses; duplicates are
// refused; a released address is reused.
func TestLeaseOnBridge(t *testing.T) {
	dir := t.TempDir()
	sub := netip.MustParsePrefix("10.77.0.0/24")
	server := []netip.Addr{netip.MustParseAddr("10.77.0.1")}
	netnstest.Run(t, func() {
		addBridge(t, netip.MustParsePrefix("10.77.0.1/24"))
		ga, _ := hostnet.MACs("vm-a", 0)
		gb, _ := hostnet.MACs("vm-b", 0)
		a, err := hostnet.LeaseOnBridge(dir, "br0", sub, server, netip.Addr{}, ga)
		if err != nil {
			t.Fatal(err)
		}
		b, err := hostnet.LeaseOnBridge(dir, "br0", sub, server, netip.Addr{}, gb)
		if err != nil {
			t.Fatal(err)
		}
		if a.Addr != netip.MustParseAddr("10.77.0.2") || b.Addr != netip.MustParseAddr("10.77.0.3") || a.MAC.String() == b.MAC.String() {
			t.Fatalf("leases %v %v and %v %v", a.Addr, a.MAC, b.Addr, b.MAC)
		}
		gc, _ := hostnet.MACs("vm-c", 0)
		if _, err := hostnet.LeaseOnBridge(dir, "br0", sub, server, a.Addr, gc); !errors.Is(err, hostnet.ErrLeaseTaken) {
			t.Errorf("address of a live lease: %v", err)
		}
		if _, err := hostnet.LeaseOnBridge(dir, "br0", sub, server, netip.Addr{}, ga); !errors.Is(err, hostnet.ErrLeaseTaken) {
			t.Errorf("MAC of a live lease: %v", err)
		}
		if err := a.Release(); err != nil {
			t.Fatal(err)
		}
		c, err := hostnet.LeaseOnBridge(dir, "br0", sub, server, netip.Addr{}, gc)
		if err != nil || c.Addr != netip.MustParseAddr("10.77.0.2") {
			t.Fatalf("after release: %v, %v", c, err)
		}
		b.Release()
		c.Release()
	})
}

// TestLeaseChild holds a lease on br0 for TestLeaseOfEndedProcess until
// stdin closes, or exits without releasing it when told to.
func TestLeaseChild(t *testing.T) {
	if os.Getenv(childEnv) != "lease" {
		t.Skip("run by TestLeaseOfEndedProcess")
	}
	g, _ := hostnet.MACs("child", 0)
	l, err := hostnet.LeaseOnBridge(os.Getenv(hostnet.StateDirEnv), "br0", netip.MustParsePrefix("10.77.0.0/24"),
		[]netip.Addr{netip.MustParseAddr("10.77.0.1")}, netip.Addr{}, g)
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("lease %v\n", l.Addr)
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0) // a crash, as far as the registry knows: no Release
}

// Another process's lease is respected while it runs and reclaimed once it
// has ended without releasing it.
func TestLeaseOfEndedProcess(t *testing.T) {
	dir := t.TempDir()
	sub := netip.MustParsePrefix("10.77.0.0/24")
	server := []netip.Addr{netip.MustParseAddr("10.77.0.1")}
	netnstest.Run(t, func() {
		addBridge(t, netip.MustParsePrefix("10.77.0.1/24"))
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeaseChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), childEnv+"=lease", hostnet.StateDirEnv+"="+dir)
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil || strings.TrimSpace(line) != "lease 10.77.0.2" {
			in.Close()
			cmd.Wait()
			t.Fatalf("child: %q, %v", line, err)
		}
		g, _ := hostnet.MACs("parent", 0)
		l, err := hostnet.LeaseOnBridge(dir, "br0", sub, server, netip.Addr{}, g)
		if err != nil || l.Addr != netip.MustParseAddr("10.77.0.3") {
			t.Fatalf("beside a live child: %v, %v", l, err)
		}
		l.Release()
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatal(err)
		}
		l, err = hostnet.LeaseOnBridge(dir, "br0", sub, server, netip.Addr{}, g)
		if err != nil || l.Addr != netip.MustParseAddr("10.77.0.2") {
			t.Fatalf("after the child ended: %v, %v", l, err)
		}
		l.Release()
	})
}
