package tap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/testenv"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

var testMAC = net.HardwareAddr{0x02, 'c', 'r', 0, 7, 1}

func nlHandle(t testing.TB) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// addrsIn returns the addresses on any link of the namespace inside p.
func addrsIn(t *testing.T, h *netlink.Handle, p netip.Prefix) []string {
	t.Helper()
	addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		if ap, ok := prefixOf(a.IPNet); ok && ap.Overlaps(p) {
			out = append(out, a.String())
		}
	}
	return out
}

func routesIn(t *testing.T, h *netlink.Handle, p netip.Prefix) []string {
	t.Helper()
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if rp, ok := prefixOf(r.Dst); ok && rp.Overlaps(p) {
			out = append(out, r.String())
		}
	}
	return out
}

// A TAP Corral creates is set up as asked and leaves nothing behind.
func TestCreateAndTeardown(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		addr := netip.MustParsePrefix("10.200.7.1/24")
		tp, err := Open(Config{Name: "corral7", Address: addr, MAC: testMAC, MTU: 1400})
		if err != nil {
			t.Fatal(err)
		}
		if !tp.Created() || tp.Name() != "corral7" || tp.MTU() != 1400 || tp.MAC().String() != testMAC.String() || !tp.VnetHdr() {
			t.Fatalf("created %v name %s mtu %d mac %v vnet %v", tp.Created(), tp.Name(), tp.MTU(), tp.MAC(), tp.VnetHdr())
		}
		want := virtionet.OffloadCsum | virtionet.OffloadTSO4 | virtionet.OffloadTSO6 | virtionet.OffloadTSOECN
		if tp.Offloads() != want {
			t.Errorf("offloads %#x, want %#x (this kernel's TUNSETOFFLOAD takes them all)", tp.Offloads(), want)
		}
		link, err := h.LinkByName("corral7")
		if err != nil {
			t.Fatal(err)
		}
		tt, ok := link.(*netlink.Tuntap)
		if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || !tt.NonPersist {
			t.Fatalf("link %T %+v: want a non-persistent TAP", link, link)
		}
		if link.Attrs().Flags&net.FlagUp == 0 || link.Attrs().Index != tp.Index() {
			t.Fatalf("flags %v index %d", link.Attrs().Flags, link.Attrs().Index)
		}
		if a := link.Attrs().Alias; a != fmt.Sprintf("corral:%d", os.Getpid()) {
			t.Fatalf("alias %q", a)
		}
		if got := addrsIn(t, h, addr); len(got) != 1 || !strings.HasPrefix(got[0], "10.200.7.1/24") {
			t.Fatalf("addresses %v", got)
		}
		if got := routesIn(t, h, addr); len(got) == 0 {
			t.Fatal("no route to the subnet")
		}
		if err := tp.SetOffload(virtionet.OffloadCsum | virtionet.OffloadTSO4); err != nil {
			t.Fatal(err)
		}
		if err := tp.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tp.Close(); err != nil {
			t.Fatal("second Close:", err)
		}
		waitGone(t, h, "corral7")
		if got := addrsIn(t, h, addr); len(got) != 0 {
			t.Fatalf("addresses left: %v", got)
		}
		if got := routesIn(t, h, addr); len(got) != 0 {
			t.Fatalf("routes left: %v", got)
		}
	})
}

// Without a name, Open makes one up; without vnet headers no offloads.
func TestGeneratedNameNoVnetHdr(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		a, err := Open(Config{NoVnetHdr: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := Open(Config{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tp := range []*Tap{a, b} {
			if !strings.HasPrefix(tp.Name(), NamePrefix) || len(tp.Name()) != len(NamePrefix)+8 || !tp.Created() {
				t.Fatalf("name %q created %v", tp.Name(), tp.Created())
			}
		}
		if a.Name() == b.Name() {
			t.Fatal("two TAPs with one name")
		}
		if a.VnetHdr() || a.Offloads() != 0 {
			t.Fatalf("NoVnetHdr: vnet %v offloads %#x", a.VnetHdr(), a.Offloads())
		}
		if err := a.SetOffload(virtionet.OffloadCsum); err == nil {
			t.Fatal("offload set without a vnet header")
		}
		a.Close()
		b.Close()
		waitGone(t, h, a.Name())
		waitGone(t, h, b.Name())
	})
}

// An existing persistent TAP is used and left as it was found.
func TestExistingTapRestored(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		pre := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "usertap"}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE}
		if err := h.LinkAdd(pre); err != nil {
			t.Fatal(err)
		}
		for _, f := range pre.Fds {
			f.Close()
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := h.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
		addr := netip.MustParsePrefix("10.200.8.1/24")
		tp, err := Open(Config{Name: "usertap", Address: addr, Bridge: "br0", MTU: 1400, MAC: testMAC})
		if err != nil {
			t.Fatal(err)
		}
		if tp.Created() || tp.MTU() != 1500 || tp.MAC().String() == testMAC.String() {
			t.Fatalf("existing TAP: created %v, MTU %d, MAC %v: MTU and MAC apply only to created TAPs", tp.Created(), tp.MTU(), tp.MAC())
		}
		brl, _ := h.LinkByName("br0")
		l, _ := h.LinkByName("usertap")
		if l.Attrs().Flags&net.FlagUp == 0 || l.Attrs().MasterIndex != brl.Attrs().Index || len(addrsIn(t, h, addr)) != 1 {
			t.Fatalf("not set up: flags %v master %d addrs %v", l.Attrs().Flags, l.Attrs().MasterIndex, addrsIn(t, h, addr))
		}
		// A second user gets ErrInUse and changes nothing.
		if _, err := Open(Config{Name: "usertap"}); !errors.Is(err, ErrInUse) {
			t.Fatalf("second Open: %v, want ErrInUse", err)
		}
		if err := tp.Close(); err != nil {
			t.Fatal(err)
		}
		l, err = h.LinkByName("usertap")
		if err != nil {
			t.Fatal("Close deleted a TAP Corral did not create")
		}
		if l.Attrs().Flags&net.FlagUp != 0 || l.Attrs().MasterIndex != 0 || len(addrsIn(t, h, addr)) != 0 {
			t.Fatalf("not restored: flags %v master %d addrs %v", l.Attrs().Flags, l.Attrs().MasterIndex, addrsIn(t, h, addr))
		}
		// An address that was already there stays.
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{10, 200, 8, 1}, Mask: net.CIDRMask(24, 32)}}); err != nil {
			t.Fatal(err)
		}
		tp, err = Open(Config{Name: "usertap", Address: addr})
		if err != nil {
			t.Fatal(err)
		}
		tp.Close()
		if got := addrsIn(t, h, addr); len(got) != 1 {
			t.Fatalf("pre-existing address removed: %v", got)
		}
	})
}

// A created TAP joins a bridge and leaves it by disappearing.
func TestCreatedTapOnBridge(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := h.LinkAdd(br); err != nil {
			t.Fatal(err)
		}
		brl, _ := h.LinkByName("br0")
		tp, err := Open(Config{Bridge: "br0"})
		if err != nil {
			t.Fatal(err)
		}
		l, _ := h.LinkByName(tp.Name())
		if l.Attrs().MasterIndex != brl.Attrs().Index {
			t.Fatalf("master %d, want br0 (%d)", l.Attrs().MasterIndex, brl.Attrs().Index)
		}
		name := tp.Name()
		tp.Close()
		waitGone(t, h, name)
		links, _ := h.LinkList()
		for _, l := range links {
			if l.Attrs().MasterIndex == brl.Attrs().Index {
				t.Fatalf("bridge still has port %s", l.Attrs().Name)
			}
		}
	})
}

// Refusals leave nothing behind.
func TestOpenRefusals(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		// A veth end stands for a host network interface (the dummy
		// driver may not be built).
		dummy := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hostnet"}, PeerName: "hostpeer"}
		if err := h.LinkAdd(dummy); err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(dummy, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{10, 200, 7, 99}, Mask: net.CIDRMask(16, 32)}}); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			cfg  Config
			want error
			msg  string
		}{
			{Config{Name: "corral7", Address: netip.MustParsePrefix("10.200.7.1/24")}, ErrSubnetInUse, "overlaps 10.200.0.0/16 on hostnet"},
			{Config{Name: "hostnet"}, ErrNotTap, "veth"},
			{Config{Name: "lo"}, ErrNotTap, ""},
			{Config{Name: "corral8", Bridge: "hostnet"}, nil, "not a bridge"},
			{Config{Name: "corral9", Bridge: "nobridge"}, nil, "bridge nobridge"},
			{Config{Name: "a/b"}, nil, "not a valid"},
			{Config{Name: "0123456789abcdef"}, nil, "not a valid"},
			{Config{MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}, nil, "unicast"},
			{Config{MTU: 20}, nil, "MTU"},
		}
		for _, c := range cases {
			_, err := Open(c.cfg)
			if err == nil || (c.want != nil && !errors.Is(err, c.want)) || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("Open(%+v): %v; want %v mentioning %q", c.cfg, err, c.want, c.msg)
			}
		}
		links, _ := h.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, NamePrefix) {
				waitGone(t, h, l.Attrs().Name)
			}
		}
	})
}

// Without privilege the error says what is missing: as nobody (refused at
// /dev/net/tun where it is 0600, else at TUNSETIFF), and as root without
// CAP_NET_ADMIN (refused at TUNSETIFF). The test thread changes only its
// own credentials, inside a fresh namespace, and is thrown away afterwards.
func TestNoPrivilege(t *testing.T) {
	testenv.MustHaveTUN(t)
	for _, c := range []struct {
		name string
		drop func() error
		want string
	}{
		{"nobody", func() error {
			// setresuid(-1, nobody, -1) on this thread only (the unix and
			// syscall wrappers change every thread of the process).
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
				return e
			}
			return nil
		}, "CAP_NET_ADMIN"},
		{"root without CAP_NET_ADMIN", func() error {
			hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
			var data [2]unix.CapUserData
			if err := unix.Capget(&hdr, &data[0]); err != nil {
				return err
			}
			data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
			data[0].Permitted &^= 1 << unix.CAP_NET_ADMIN
			return unix.Capset(&hdr, &data[0]) // this thread only
		}, "TUNSETIFF to create TAP \"corralp\""},
	} {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
				if _, err := netns.New(); err != nil {
					done <- fmt.Errorf("netns: %w", err)
					return
				}
				if err := c.drop(); err != nil {
					done <- fmt.Errorf("drop privilege: %w", err)
					return
				}
				tp, err := Open(Config{Name: "corralp", Address: netip.MustParsePrefix("10.200.9.1/24")})
				if err == nil {
					tp.Close()
				}
				done <- err
			}()
			err := <-done
			if !errors.Is(err, ErrNoPrivilege) {
				t.Fatalf("Open without privilege: %v; want ErrNoPrivilege", err)
			}
			if !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("message %q does not say what is missing (%q)", err, c.want)
			}
			t.Log(err)
		})
	}
}
