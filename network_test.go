package corral

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/hostnet"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/tests/guests"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

// Each network mistake is a configuration error (ErrConfig, exit 125) found
// by Validate before KVM is opened, with a message naming it.
func TestNetValidateErrors(t *testing.T) {
	k := guests.BuildT(t, "hello")
	closed, other := socketPairFiles(t)
	closed.Close()
	open, other2 := socketPairFiles(t)
	defer open.Close()
	defer other.Close()
	defer other2.Close()
	for _, c := range []struct {
		name string
		net  Net
		want string
	}{
		{"zero MAC", Net{MAC: net.HardwareAddr{0, 0, 0, 0, 0, 0}}, "MAC 00:00:00:00:00:00 is not a non-zero unicast"},
		{"multicast MAC", Net{MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}}, "not a non-zero unicast"},
		{"host is the network address", Net{Host: mustPrefix("10.9.0.0/24")}, "host address 10.9.0.0 is the network address of 10.9.0.0/24"},
		{"host is the broadcast address", Net{Host: mustPrefix("10.9.0.255/24")}, "host address 10.9.0.255 is the broadcast address"},
		{"host prefix /31", Net{Host: mustPrefix("10.9.0.1/31")}, "/8 to /30 prefix"},
		{"TAP name too long", Net{Tap: "corral-much-too-long"}, "not a valid Linux interface name (at most 15 bytes"},
		{"missing bridge", Net{Bridge: "nosuchbr0"}, "no such bridge: nosuchbr0 does not exist"},
		{"ip outside host's subnet", Net{Host: mustPrefix("10.9.0.1/24"), IP: mustAddr("10.9.1.5")}, "guest address 10.9.1.5 is outside the subnet 10.9.0.0/24"},
		{"ip is the host's", Net{Host: mustPrefix("10.9.0.1/24"), IP: mustAddr("10.9.0.1")}, "guest address 10.9.0.1 is the host's"},
		{"ip is a network address", Net{IP: mustAddr("10.9.0.0")}, "guest address 10.9.0.0 is the network address"},
		{"ip is IPv6", Net{IP: mustAddr("fd00::5")}, "not IPv4"},
		{"Backend and File", Net{Backend: &virtionet.FileBackend{}, File: open}, "both Backend and File"},
		{"File and tap=", Net{File: open, Tap: "tap0"}, "takes no tap= or bridge="},
		{"closed File", Net{File: closed}, "is not open"},
		{"DNS", Net{DNS: []netip.Addr{mustAddr("0.0.0.0")}}, "DNS server 0.0.0.0"},
	} {
		err := (&Config{Kernel: k, Nets: []Net{{}, c.net}}).Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "net 1: ") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrConfig with %q", c.name, err, c.want)
		}
	}
	ok := []Net{{}, {IP: mustAddr("10.9.0.1")}, {File: open, Host: mustPrefix("10.1.0.1/16")}, {Tap: "exactly15bytes_"}}
	if err := (&Config{Kernel: k, Nets: ok}).Validate(); err != nil {
		t.Errorf("valid nets: %v", err)
	}
	// A bridge without an address has nothing for the DHCP server to be.
	netnstest.Run(t, func() {
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
			t.Fatal(err)
		}
		err := (&Config{Kernel: k, Nets: []Net{{Bridge: "br0"}}}).Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "bridge br0 has no IPv4 address") {
			t.Errorf("bridge without address: %v", err)
		}
		if err := (&Config{Kernel: k, Nets: []Net{{Bridge: "br0", NoDHCP: true}}}).Validate(); err != nil {
			t.Errorf("bridge without address, dhcp=off: %v", err)
		}
	})
}

func TestParseNetFD(t *testing.T) {
	a, b := socketPairFiles(t)
	defer b.Close()
	// A descriptor of its own for the parsed File to own.
	fd, err := unix.FcntlInt(a.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	a.Close()
	if err != nil {
		t.Fatal(err)
	}
	n, err := ParseNet("fd=" + strconv.Itoa(fd) + ",host=10.5.0.1/24")
	if err != nil || n.File == nil || n.File.Fd() != uintptr(fd) || n.Host != mustPrefix("10.5.0.1/24") {
		t.Fatalf("ParseNet(fd=%d) = %+v, %v", fd, n, err)
	}
	n.File.Close()
	for _, bad := range []string{"fd=", "fd=x", "fd=-1", "fd=7,fd=8"} {
		if _, err := ParseNet(bad); err == nil {
			t.Errorf("ParseNet(%q) accepted", bad)
		}
	}
}

// socketPairFiles returns the two ends of a SOCK_SEQPACKET pair.
func socketPairFiles(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return os.NewFile(uintptr(fds[0]), "vm-end"), os.NewFile(uintptr(fds[1]), "peer-end")
}

// nicMachine is enough of a Machine for openNIC: an ID and a logger.
func nicMachine(id string) *Machine {
	return &Machine{id: id, log: slog.New(slog.DiscardHandler)}
}

// A NIC on a socket pair needs no root and no host change: the plan names
// 10.200.0.0/24, the DHCP server is configured from it, and closing the
// device closes the socket.
func TestNetNICOnSocketPair(t *testing.T) {
	t.Setenv(hostnet.StateDirEnv, t.TempDir())
	vm, peer := socketPairFiles(t)
	defer peer.Close()
	m := nicMachine("0123456789abcdef")
	n, err := m.openNIC(0, Net{File: vm, DNS: []netip.Addr{mustAddr("10.200.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	g, h := hostnet.MACs(m.id, 0)
	if n.tap != "" || n.host != mustPrefix("10.200.0.1/24") || n.guest != mustAddr("10.200.0.2") || n.mac.String() != g.String() || n.dhcp == nil {
		t.Fatalf("nic %+v", n)
	}
	if _, err := vm.Stat(); err == nil {
		t.Error("the given File is still open: the NIC should own a duplicate")
	}
	// The server answers as the planned host MAC: its config came whole
	// from the plan.
	if h.String() == g.String() {
		t.Fatal("host and guest MACs are equal")
	}
	if err := n.dev.Close(); err != nil {
		t.Fatal(err)
	}
	// The device's end is closed: the peer reads EOF.
	buf := make([]byte, 64)
	if k, _, err := unix.Recvfrom(int(peer.Fd()), buf, unix.MSG_DONTWAIT); k != 0 || err != nil {
		t.Fatalf("peer read %d, %v after close; want EOF", k, err)
	}
}

// Two VMs on one bridge get different MACs and addresses from the bridge's
// subnet, with the bridge's address as their DHCP server; a closed NIC
// gives its address back.
func TestNetBridgedNICsDiffer(t *testing.T) {
	t.Setenv(hostnet.StateDirEnv, t.TempDir())
	netnstest.Run(t, func() {
		addBridge(t, "br0", "10.66.0.1/24")
		a, err := nicMachine("aaaaaaaaaaaaaaaa").openNIC(0, Net{Bridge: "br0"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := nicMachine("bbbbbbbbbbbbbbbb").openNIC(0, Net{Bridge: "br0"})
		if err != nil {
			a.dev.Close()
			t.Fatal(err)
		}
		if a.mac.String() == b.mac.String() || a.guest == b.guest {
			t.Errorf("both NICs got %v / %v and %v / %v", a.mac, a.guest, b.mac, b.guest)
		}
		for _, n := range []*nic{a, b} {
			if n.host != mustPrefix("10.66.0.1/24") || !n.host.Masked().Contains(n.guest) || n.guest == n.host.Addr() {
				t.Errorf("NIC %s: server %v guest %v", n.tap, n.host, n.guest)
			}
		}
		if err := a.dev.Close(); err != nil {
			t.Fatal(err)
		}
		c, err := nicMachine("cccccccccccccccc").openNIC(0, Net{Bridge: "br0"})
		if err != nil {
			t.Fatal(err)
		}
		if c.guest != a.guest {
			t.Errorf("after the first NIC closed the next got %v, want its %v back", c.guest, a.guest)
		}
		b.dev.Close()
		c.dev.Close()
	})
}

// TestParseNetErrorOwnsNothing: a ParseNet that fails after fd=N must not
// leave an *os.File for N behind: its finalizer would close descriptor N
// at some later GC, whoever holds the number then (in CI's race run it
// closed the Go runtime's netpoll eventfd: "netpollBreak write failed").
func TestParseNetErrorOwnsNothing(t *testing.T) {
	a, b := socketPairFiles(t)
	defer a.Close()
	defer b.Close()
	fd := int(a.Fd())
	for _, bad := range []string{"fd=%d,mac=zz", "fd=%d,fd=%d", "fd=%d,bogus"} {
		if _, err := ParseNet(strings.ReplaceAll(bad, "%d", strconv.Itoa(fd))); err == nil {
			t.Fatalf("ParseNet(%q) accepted", bad)
		}
	}
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
		t.Fatalf("descriptor %d closed behind its owner's back after a failed ParseNet: %v", fd, err)
	}
}

// addBridge creates bridge name with address cidr in the current network
// namespace (a test's own: netnstest).
func addBridge(t *testing.T, name, cidr string) *netlink.Bridge {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addr, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	return br
}
