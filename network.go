package corral

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/corral-vmm/corral/dhcp"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
	"github.com/corral-vmm/corral/virtio/virtionet/tap"
)

// Net is a virtio-net NIC on a host TAP device. Unless NoDHCP is set, the
// built-in DHCP server answers the guest's DHCP from inside the VMM: those
// frames never reach the host.
type Net struct {
	// Tap is an existing TAP device to use; empty creates one for this
	// machine, which vanishes when the machine ends (crash included).
	Tap string
	// MAC is the guest's MAC address; nil derives a locally administered
	// one from the network.
	MAC net.HardwareAddr
	// IP is the address the DHCP server reserves for the guest; the zero
	// value is .2 of the subnet.
	IP netip.Addr
	// Host is the host side's address and the guest's subnet, e.g.
	// 10.0.5.1/24: the guest's router and DHCP server. The zero value picks
	// the first free 10.200.N.1/24 (N = 0..255).
	Host netip.Prefix
	// Bridge attaches the TAP to an existing bridge. The TAP then gets no
	// address unless Host is set.
	Bridge string
	// DNS servers the DHCP server offers (none by default).
	DNS []netip.Addr
	// NoDHCP passes the guest's DHCP to the host instead of answering it.
	NoDHCP bool
}

// ParseNet parses the CLI form: tap=NAME or auto, then any of mac=MAC,
// ip=IP, host=IP/PREFIX, bridge=NAME, dns=IP[+IP...], dhcp=off.
func ParseNet(s string) (Net, error) {
	var n Net
	for i, p := range strings.Split(s, ",") {
		k, v, hasV := strings.Cut(p, "=")
		if i == 0 && p == "auto" {
			continue
		}
		var err error
		switch {
		case k == "tap" && hasV && v != "":
			n.Tap = v
		case k == "mac" && hasV:
			n.MAC, err = net.ParseMAC(v)
		case k == "ip" && hasV:
			n.IP, err = netip.ParseAddr(v)
		case k == "host" && hasV:
			n.Host, err = netip.ParsePrefix(v)
		case k == "bridge" && hasV && v != "":
			n.Bridge = v
		case k == "dns" && hasV:
			for _, a := range strings.Split(v, "+") {
				ip, perr := netip.ParseAddr(a)
				if perr != nil {
					err = perr
					break
				}
				n.DNS = append(n.DNS, ip)
			}
		case k == "dhcp" && (v == "off" || v == "on"):
			n.NoDHCP = v == "off"
		default:
			return n, fmt.Errorf("net %q: unknown option %q (want tap=NAME or auto, mac=, ip=, host=, bridge=, dns=, dhcp=off)", s, p)
		}
		if err != nil {
			return n, fmt.Errorf("net %q: %s: %w", s, k, err)
		}
	}
	return n, nil
}

// validate checks what can be checked without the host.
func (n *Net) validate() error {
	if n.MAC != nil && (len(n.MAC) != 6 || n.MAC[0]&1 != 0) {
		return fmt.Errorf("MAC %v is not a unicast Ethernet address", n.MAC)
	}
	if n.Host.IsValid() && (!n.Host.Addr().Is4() || n.Host.Bits() > 30 || n.Host.Bits() < 8) {
		return fmt.Errorf("host address %v is not an IPv4 address with a /8 to /30 prefix", n.Host)
	}
	if n.IP.IsValid() {
		if !n.IP.Is4() {
			return fmt.Errorf("guest address %v is not IPv4", n.IP)
		}
		if n.Host.IsValid() && (!n.Host.Masked().Contains(n.IP) || n.IP == n.Host.Addr()) {
			return fmt.Errorf("guest address %v is not a free address of the host's subnet %v", n.IP, n.Host.Masked())
		}
	}
	return nil
}

// NetworkStatus describes one NIC of a running machine, for inventories
// and tests.
type NetworkStatus struct {
	Tap    string             // the host TAP device
	Host   netip.Prefix       // the host side address (the guest's router), if any
	Guest  netip.Addr         // the address reserved for the guest
	MAC    net.HardwareAddr   // the guest's MAC
	NIC    virtionet.Counters // frames through the device
	DHCP   *dhcp.Counters     // the DHCP server's counters; nil with NoDHCP
	Leases []dhcp.LeaseInfo   // the DHCP server's leases
}

// nic is one virtio-net device's host side.
type nic struct {
	dev   *virtionet.Device
	tap   *tap.Tap
	dhcp  *dhcp.Server
	host  netip.Prefix
	guest netip.Addr
	mac   net.HardwareAddr
}

// Networks reports the machine's NICs.
func (m *Machine) Networks() []NetworkStatus {
	var out []NetworkStatus
	for _, n := range m.plat.nics {
		s := NetworkStatus{Tap: n.tap.Name(), Host: n.host, Guest: n.guest, MAC: n.mac, NIC: n.dev.Counters()}
		if n.dhcp != nil {
			c := n.dhcp.Counters()
			s.DHCP = &c
			s.Leases = n.dhcp.Leases()
		}
		out = append(out, s)
	}
	return out
}

// createNets opens or creates each TAP, starts its DHCP server and puts
// the virtio-net devices on the PCI bus.
func (m *Machine) createNets() error {
	for i, cfg := range m.cfg.Nets {
		name := fmt.Sprintf("virtio-net %d", i)
		n, err := m.openNIC(cfg)
		if err != nil {
			return fmt.Errorf("corral: net %d: %w", i, err)
		}
		m.plat.nics = append(m.plat.nics, n)
		if err := m.addVirtio(name, n.dev); err != nil {
			return err
		}
		m.log.Info("vm.net", "id", m.id, "tap", n.tap.Name(), "host", n.host, "guest", n.guest, "mac", n.mac.String(), "dhcp", n.dhcp != nil)
	}
	return nil
}

// openNIC sets up one NIC's TAP, network and DHCP server and builds its
// device. On error nothing is left behind.
func (m *Machine) openNIC(cfg Net) (*nic, error) {
	var (
		network virtionet.Network
		t       *tap.Tap
		err     error
	)
	tapCfg := tap.Config{Name: cfg.Tap, Bridge: cfg.Bridge, Logger: m.log}
	switch {
	case cfg.Host.IsValid():
		base := netip.PrefixFrom(cfg.Host.Masked().Addr(), min(cfg.Host.Bits(), 24))
		if network, err = virtionet.NetworkFor(base, 0); err != nil {
			return nil, err
		}
		network.Subnet, network.Host = cfg.Host.Masked(), cfg.Host
		network.Guest = firstGuestAddr(cfg.Host)
		tapCfg.Address, tapCfg.MAC, tapCfg.MTU = cfg.Host, network.HostMAC, network.MTU
		if t, err = tap.Open(tapCfg); err != nil {
			return nil, err
		}
	case cfg.Bridge != "":
		// On a bridge the host side has no address of ours: the default
		// network only names the guest's address for DHCP.
		if network, err = virtionet.DefaultNetwork(0); err != nil {
			return nil, err
		}
		if t, err = tap.Open(tapCfg); err != nil {
			return nil, err
		}
	default:
		// The first 10.200.N.0/24 that no host interface uses.
		for idx := 0; idx < 256; idx++ {
			if network, err = virtionet.DefaultNetwork(idx); err != nil {
				return nil, err
			}
			tapCfg.Address, tapCfg.MAC, tapCfg.MTU = network.Host, network.HostMAC, network.MTU
			t, err = tap.Open(tapCfg)
			if errors.Is(err, tap.ErrSubnetInUse) {
				continue
			}
			break
		}
		if err != nil {
			return nil, err
		}
	}
	n := &nic{tap: t, host: tapCfg.Address, mac: network.GuestMAC, guest: network.Guest}
	if cfg.MAC != nil {
		n.mac = cfg.MAC
	}
	if cfg.IP.IsValid() {
		n.guest = cfg.IP
	}
	var handler virtionet.FrameHandler
	if !cfg.NoDHCP {
		dc := network.DHCPConfig(cfg.DNS...)
		dc.Server = network.Host
		dc.Router = network.Host.Addr()
		dc.ServerMAC = t.MAC()
		dc.MTU = t.MTU()
		dc.AllowedMACs = []net.HardwareAddr{n.mac}
		dc.Reservations = []dhcp.Reservation{{MAC: n.mac, IP: n.guest}}
		if !dc.Server.Masked().Contains(dc.PoolFirst) || !dc.Server.Masked().Contains(dc.PoolLast) {
			dc.PoolFirst, dc.PoolLast = n.guest, n.guest
		}
		dc.Logger = m.log.With("dhcp", t.Name())
		if n.dhcp, err = dhcp.New(dc); err != nil {
			t.Close()
			return nil, err
		}
		handler = virtionet.DHCP(n.dhcp)
	}
	n.dev, err = virtionet.New(virtionet.Config{Backend: t, MAC: n.mac, MTU: t.MTU(), Handler: handler, Logger: m.log.With("device", t.Name())})
	if err != nil {
		t.Close()
		return nil, err
	}
	return n, nil
}

// firstGuestAddr is the first address of host's subnet that is neither the
// network address nor the host's own.
func firstGuestAddr(host netip.Prefix) netip.Addr {
	a := host.Masked().Addr().Next()
	if a == host.Addr() {
		a = a.Next()
	}
	return a
}
