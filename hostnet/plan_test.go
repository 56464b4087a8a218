package hostnet

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/dhcp"
)

func TestDefaultPlan(t *testing.T) {
	p, err := DefaultPlan(7, "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	if p.Subnet != netip.MustParsePrefix("10.200.7.0/24") || p.Host != netip.MustParsePrefix("10.200.7.1/24") ||
		p.Guest != netip.MustParseAddr("10.200.7.2") || p.MTU != DefaultMTU {
		t.Fatalf("plan %v", p)
	}
	// The plan's DHCP config is complete: the server takes it as it is.
	c := p.DHCPConfig()
	if _, err := dhcp.New(c); err != nil {
		t.Fatalf("DHCPConfig does not validate: %v", err)
	}
	if c.Server != p.Host || !bytes.Equal(c.ServerMAC, p.HostMAC) || c.Router != p.Host.Addr() || c.MTU != p.MTU ||
		len(c.Reservations) != 1 || c.Reservations[0].IP != p.Guest || !bytes.Equal(c.AllowedMACs[0], p.GuestMAC) || len(c.DNS) != 0 ||
		!c.Authoritative {
		t.Fatalf("DHCP config %+v for plan %v", c, p)
	}
	last, err := Subnet(netip.MustParsePrefix("10.0.0.0/8"), 65535)
	if err != nil || last != netip.MustParsePrefix("10.255.255.0/24") {
		t.Fatalf("Subnet(10/8, 65535) = %v, %v", last, err)
	}
	for _, bad := range []struct {
		base  string
		index int
	}{{DefaultBase, DefaultSubnets}, {DefaultBase, -1}, {"10.200.7.0/25", 0}, {"10.0.0.0/7", 0}, {"fd00::/8", 0}} {
		if _, err := Subnet(netip.MustParsePrefix(bad.base), bad.index); !errors.Is(err, ErrPlan) {
			t.Errorf("Subnet(%s, %d) = %v", bad.base, bad.index, err)
		}
	}
}

// MACs differ between VMs and between NICs, and are locally administered
// unicast; the same VM and NIC always get the same ones.
func TestMACs(t *testing.T) {
	seen := map[string]string{}
	for _, id := range []string{"0123456789abcdef", "0123456789abcdee", "x", ""} {
		for nic := 0; nic < 3; nic++ {
			g, h := MACs(id, nic)
			for _, m := range []net.HardwareAddr{g, h} {
				if err := CheckMAC(m); err != nil || m[0]&2 == 0 {
					t.Fatalf("MAC %v: %v, or not locally administered", m, err)
				}
				if prev, dup := seen[m.String()]; dup {
					t.Fatalf("MAC %v for %q/%d and %s", m, id, nic, prev)
				}
				seen[m.String()] = id
			}
			if g2, _ := MACs(id, nic); !bytes.Equal(g, g2) {
				t.Fatal("MACs is not deterministic")
			}
		}
	}
}

func TestNewPlanRefuses(t *testing.T) {
	g, h := MACs("vm", 0)
	for _, c := range []struct {
		host, guest string
		gm, hm      net.HardwareAddr
		want        string
	}{
		{"10.0.5.0/24", "", g, h, "network address"},
		{"10.0.5.255/24", "", g, h, "broadcast address"},
		{"10.0.5.1/31", "", g, h, "/8 to /30"},
		{"fd00::1/64", "", g, h, "IPv4"},
		{"10.0.5.1/24", "10.0.6.2", g, h, "outside the subnet"},
		{"10.0.5.1/24", "10.0.5.255", g, h, "broadcast address"},
		{"10.0.5.1/24", "10.0.5.1", g, h, "is the host's"},
		{"10.0.5.1/24", "", net.HardwareAddr{0, 0, 0, 0, 0, 0}, h, "non-zero unicast"},
		{"10.0.5.1/24", "", g, net.HardwareAddr{1, 0, 0, 0, 0, 1}, "non-zero unicast"},
	} {
		var guest netip.Addr
		if c.guest != "" {
			guest = netip.MustParseAddr(c.guest)
		}
		_, err := NewPlan(netip.MustParsePrefix(c.host), guest, c.gm, c.hm)
		if !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPlan(%s, %s): %v, want %q", c.host, c.guest, err, c.want)
		}
	}
	// The guest defaults to the first address that is not the host's.
	p, err := NewPlan(netip.MustParsePrefix("10.0.5.1/24"), netip.Addr{}, g, h)
	if err != nil || p.Guest != netip.MustParseAddr("10.0.5.2") {
		t.Fatalf("%v, %v", p, err)
	}
	if p, _ = NewPlan(netip.MustParsePrefix("10.0.5.9/24"), netip.Addr{}, g, h); p.Guest != netip.MustParseAddr("10.0.5.1") {
		t.Fatalf("guest %v", p.Guest)
	}
}

func TestSubnetAround(t *testing.T) {
	for in, want := range map[string]string{"10.9.0.5": "10.9.0.1/24", "10.9.0.1": "10.9.0.2/24"} {
		if got, err := SubnetAround(netip.MustParseAddr(in)); err != nil || got.String() != want {
			t.Errorf("SubnetAround(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"10.9.0.0", "10.9.0.255", "fd00::1"} {
		if _, err := SubnetAround(netip.MustParseAddr(bad)); !errors.Is(err, ErrPlan) {
			t.Errorf("SubnetAround(%s): %v", bad, err)
		}
	}
}

func TestRandomMAC(t *testing.T) {
	m, err := RandomMAC(bytes.NewReader([]byte{0xff, 1, 2, 3, 4, 5}))
	if err != nil || m.String() != "fe:01:02:03:04:05" {
		t.Fatalf("got %v, %v", m, err)
	}
	if _, err := RandomMAC(bytes.NewReader(nil)); err == nil {
		t.Fatal("short read accepted")
	}
}

func TestRegistryEntries(t *testing.T) {
	e, ok := parseEntry("10.0.0.2 02:00:00:00:00:01 42 1234 abcd")
	if !ok || e.addr != netip.MustParseAddr("10.0.0.2") || e.pid != 42 || e.start != 1234 || e.token != "abcd" {
		t.Fatalf("%+v %v", e, ok)
	}
	for _, bad := range []string{"", "10.0.0.2 02:00:00:00:00:01 42 1234", "x 02:00:00:00:00:01 42 1 t", "10.0.0.2 zz 42 1 t", "10.0.0.2 02:00:00:00:00:01 -1 1 t"} {
		if _, ok := parseEntry(bad); ok {
			t.Errorf("parseEntry(%q) accepted", bad)
		}
	}
}
