package virtionet

import (
	"fmt"
	"io"
	stdnet "net"
	"net/netip"

	"github.com/corral-vmm/corral/dhcp"
)

// DefaultBase is the IPv4 block DefaultNetwork carves one /24 per VM from.
// It is private (RFC 1918) and away from the 10.0.x.0 and 10.1.x.0 ranges
// home routers and VPNs favour; pick another base with NetworkFor if it
// collides with a host network (tap.Open refuses an overlapping subnet).
const DefaultBase = "10.200.0.0/16"

// Network is one VM's private IPv4 link: a routed /24 between the host side
// of its TAP and the guest, served by the built-in DHCP server.
//
//	.1        the host (TAP address): the guest's router and DHCP server
//	.2        the guest, reserved for GuestMAC so it always gets it
//	.10–.254  the DHCP pool (other MACs are refused unless the DHCP config
//	          says AllowAnyMAC, so in practice unused)
//
// MACs are locally administered unicast addresses derived from the index:
// 02:63:72:HI:LO:02 for the guest and ...:01 for the TAP ("cr" for Corral,
// the index, the host part of the IP). They are unique per host, which is
// all a routed TAP needs; a guest bridged onto a shared LAN should use
// RandomMAC instead. QEMU's 52:54:00 OUI is not used.
type Network struct {
	Index     int
	Subnet    netip.Prefix        // the VM's /24
	Host      netip.Prefix        // host side address with the subnet's length, e.g. 10.200.3.1/24
	Guest     netip.Addr          // the guest's address (.2)
	PoolFirst netip.Addr          // first dynamic address (.10)
	PoolLast  netip.Addr          // last dynamic address (.254)
	GuestMAC  stdnet.HardwareAddr // the virtio-net MAC (Config.MAC)
	HostMAC   stdnet.HardwareAddr // the TAP's MAC, and the DHCP server's
	TapName   string              // "corral<index>"
	MTU       int                 // DefaultMTU
}

// DefaultNetwork returns the network of VM index (0..255) in DefaultBase:
// 10.200.<index>.0/24.
func DefaultNetwork(index int) (Network, error) {
	return NetworkFor(netip.MustParsePrefix(DefaultBase), index)
}

// NetworkFor returns the index-th /24 of base (an IPv4 prefix of /8 to /24)
// as a Network.
func NetworkFor(base netip.Prefix, index int) (Network, error) {
	if !base.IsValid() || !base.Addr().Is4() || base.Bits() < 8 || base.Bits() > 24 {
		return Network{}, fmt.Errorf("virtio-net: network base %v is not an IPv4 prefix of /8 to /24", base)
	}
	n := 1 << (24 - base.Bits())
	if index < 0 || index >= n {
		return Network{}, fmt.Errorf("virtio-net: network index %d outside 0..%d for base %v", index, n-1, base)
	}
	b := base.Masked().Addr().As4()
	net24 := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8) + uint32(index)<<8
	at := func(host uint32) netip.Addr {
		v := net24 | host
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	mac := func(last byte) stdnet.HardwareAddr {
		return stdnet.HardwareAddr{0x02, 'c', 'r', byte(index >> 8), byte(index), last}
	}
	return Network{
		Index:     index,
		Subnet:    netip.PrefixFrom(at(0), 24),
		Host:      netip.PrefixFrom(at(1), 24),
		Guest:     at(2),
		PoolFirst: at(10),
		PoolLast:  at(254),
		GuestMAC:  mac(2),
		HostMAC:   mac(1),
		TapName:   fmt.Sprintf("corral%d", index),
		MTU:       DefaultMTU,
	}, nil
}

// DHCPConfig returns the DHCP server configuration for the network: the
// host address as server and router, the guest's MAC as the only client
// (reserved to Guest), the network's MTU, and dns as the DNS servers (none
// when empty: give the host's address only if something answers DNS there).
func (n Network) DHCPConfig(dns ...netip.Addr) dhcp.Config {
	return dhcp.Config{
		Server:       n.Host,
		ServerMAC:    n.HostMAC,
		PoolFirst:    n.PoolFirst,
		PoolLast:     n.PoolLast,
		Router:       n.Host.Addr(),
		DNS:          dns,
		MTU:          n.MTU,
		AllowedMACs:  []stdnet.HardwareAddr{n.GuestMAC},
		Reservations: []dhcp.Reservation{{MAC: n.GuestMAC, IP: n.Guest}},
	}
}

// RandomMAC returns a random locally administered unicast MAC read from r
// (crypto/rand.Reader in production).
func RandomMAC(r io.Reader) (stdnet.HardwareAddr, error) {
	m := make(stdnet.HardwareAddr, 6)
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, fmt.Errorf("virtio-net: random MAC: %w", err)
	}
	m[0] = m[0]&^1 | 2 // unicast, locally administered
	return m, nil
}

// String describes the network for logs.
func (n Network) String() string {
	return fmt.Sprintf("net%d %s host %s guest %s (%s) pool %s-%s tap %s (%s) mtu %d",
		n.Index, n.Subnet, n.Host, n.Guest, n.GuestMAC, n.PoolFirst, n.PoolLast, n.TapName, n.HostMAC, n.MTU)
}
