// Package hostnet plans the host side of a VM's network: which IPv4 subnet
// a NIC gets, the host's and the guest's addresses on it, both MACs, and
// the configuration of the DHCP server that answers the guest. It holds the
// host network policy (the default base, the MAC scheme) so that the
// virtio-net device does not, and it allocates what must be unique per host
// atomically across processes: a routed /24 per TAP (ClaimSubnet) and guest
// addresses on a shared bridge (LeaseOnBridge), both under a lock file in
// StateDir.
package hostnet

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"

	"github.com/corral-vmm/corral/dhcp"
)

// DefaultBase is the IPv4 block that routed TAPs get one /24 each from, in
// order: 10.200.0.0/24, 10.200.1.0/24, ... 10.200.255.0/24. It is private
// (RFC 1918) and away from the 10.0.x.0 and 10.1.x.0 ranges home routers
// and VPNs favour. So at most DefaultSubnets routed NICs with an
// automatic subnet exist on one host at a time; more need an explicit host
// address, a bridge, or another base.
const DefaultBase = "10.200.0.0/16"

// SubnetBits is the prefix length of each planned subnet.
const SubnetBits = 24

// DefaultSubnets is how many /24s DefaultBase holds.
const DefaultSubnets = 1 << (SubnetBits - 16)

// DefaultMTU is the MTU of a planned link.
const DefaultMTU = 1500

// ErrPlan is wrapped by every error that comes from the inputs of a plan (an
// address that does not fit its subnet, a bad base), as opposed to the
// host's state.
var ErrPlan = errors.New("hostnet: invalid network plan")

// ErrExhausted: every subnet of the base is in use on the host.
var ErrExhausted = errors.New("hostnet: no free subnet left")

// Plan is one NIC's network: a link between the host side (a TAP address,
// a bridge's address, or only the DHCP server's identity on a socket pair)
// and the guest.
type Plan struct {
	Subnet   netip.Prefix     // the link's subnet
	Host     netip.Prefix     // host side's address with the subnet's length: the guest's router and DHCP server
	Guest    netip.Addr       // the guest's address, reserved for GuestMAC
	GuestMAC net.HardwareAddr // the virtio-net device's MAC
	HostMAC  net.HardwareAddr // the DHCP server's source MAC (and a created TAP's)
	MTU      int
	DNS      []netip.Addr // DNS servers offered (none when empty)
}

// Subnet returns the index-th /24 of base, an IPv4 prefix of /8 to /24.
func Subnet(base netip.Prefix, index int) (netip.Prefix, error) {
	if !base.IsValid() || !base.Addr().Is4() || base.Bits() < 8 || base.Bits() > SubnetBits {
		return netip.Prefix{}, fmt.Errorf("%w: base %v is not an IPv4 prefix of /8 to /%d", ErrPlan, base, SubnetBits)
	}
	n := 1 << (SubnetBits - base.Bits())
	if index < 0 || index >= n {
		return netip.Prefix{}, fmt.Errorf("%w: subnet index %d outside 0..%d of %v", ErrPlan, index, n-1, base)
	}
	return netip.PrefixFrom(addAddr(base.Masked().Addr(), uint32(index)<<(32-SubnetBits)), SubnetBits), nil
}

// NewPlan plans a link on host's subnet. host is the host side's address
// with the subnet's length (e.g. 10.200.3.1/24); guest is the guest's
// address, or the zero Addr for the first address of the subnet that is
// not the host's. Both must be usable host addresses (not the network or
// broadcast address) of the subnet, and differ.
func NewPlan(host netip.Prefix, guest netip.Addr, guestMAC, hostMAC net.HardwareAddr) (Plan, error) {
	if err := CheckHost(host); err != nil {
		return Plan{}, err
	}
	sub := host.Masked()
	if !guest.IsValid() {
		guest = sub.Addr().Next()
		if guest == host.Addr() {
			guest = guest.Next()
		}
	}
	if err := checkMember(sub, guest, "guest address"); err != nil {
		return Plan{}, err
	}
	if guest == host.Addr() {
		return Plan{}, fmt.Errorf("%w: guest address %v is the host's", ErrPlan, guest)
	}
	for _, m := range []net.HardwareAddr{guestMAC, hostMAC} {
		if err := CheckMAC(m); err != nil {
			return Plan{}, err
		}
	}
	return Plan{Subnet: sub, Host: host, Guest: guest, GuestMAC: guestMAC, HostMAC: hostMAC, MTU: DefaultMTU}, nil
}

// CheckHost reports a host address that cannot head a link: not IPv4, a
// prefix outside /8../30, or the subnet's network or broadcast address.
func CheckHost(host netip.Prefix) error {
	if !host.IsValid() || !host.Addr().Is4() || host.Bits() < 8 || host.Bits() > 30 {
		return fmt.Errorf("%w: host address %v is not an IPv4 address with a /8 to /30 prefix", ErrPlan, host)
	}
	return checkMember(host.Masked(), host.Addr(), "host address")
}

// SubnetAround returns the /24 holding guest with the host on its first
// other address: the plan when only the guest's address is given.
func SubnetAround(guest netip.Addr) (netip.Prefix, error) {
	if !guest.Is4() {
		return netip.Prefix{}, fmt.Errorf("%w: guest address %v is not IPv4", ErrPlan, guest)
	}
	sub := netip.PrefixFrom(guest, SubnetBits).Masked()
	if err := checkMember(sub, guest, "guest address"); err != nil {
		return netip.Prefix{}, err
	}
	h := sub.Addr().Next()
	if h == guest {
		h = h.Next()
	}
	return netip.PrefixFrom(h, SubnetBits), nil
}

// checkMember reports an address that is not a usable host address of sub.
func checkMember(sub netip.Prefix, a netip.Addr, what string) error {
	if !a.Is4() || !sub.Contains(a) {
		return fmt.Errorf("%w: %s %v is outside the subnet %v", ErrPlan, what, a, sub)
	}
	if a == sub.Addr() {
		return fmt.Errorf("%w: %s %v is the network address of %v", ErrPlan, what, a, sub)
	}
	if a == broadcast(sub) {
		return fmt.Errorf("%w: %s %v is the broadcast address of %v", ErrPlan, what, a, sub)
	}
	return nil
}

// CheckMAC reports a MAC that is not a unicast, non-zero Ethernet address.
func CheckMAC(m net.HardwareAddr) error {
	if len(m) != 6 || m[0]&1 != 0 || [6]byte(m) == [6]byte{} {
		return fmt.Errorf("%w: MAC %v is not a non-zero unicast Ethernet address", ErrPlan, m)
	}
	return nil
}

// MACs derives a NIC's guest and host MACs from a VM's unique ID and the
// NIC's index: locally administered unicast addresses with 46 bits of
// SHA-256, so VMs with distinct IDs get distinct MACs (on a shared bridge
// LeaseOnBridge also refuses a duplicate among this host's VMs).
func MACs(vmID string, nic int) (guest, host net.HardwareAddr) {
	derive := func(role string) net.HardwareAddr {
		h := sha256.Sum256([]byte("corral-mac\x00" + vmID + "\x00" + strconv.Itoa(nic) + "\x00" + role))
		m := net.HardwareAddr(h[:6])
		m[0] = m[0]&^3 | 2 // unicast, locally administered
		return m
	}
	return derive("guest"), derive("host")
}

// RandomMAC returns a random locally administered unicast MAC read from r
// (crypto/rand.Reader in production).
func RandomMAC(r io.Reader) (net.HardwareAddr, error) {
	m := make(net.HardwareAddr, 6)
	if _, err := io.ReadFull(r, m); err != nil {
		return nil, fmt.Errorf("hostnet: random MAC: %w", err)
	}
	m[0] = m[0]&^1 | 2 // unicast, locally administered
	return m, nil
}

// DHCPConfig returns the DHCP server's configuration for the plan, complete:
// the host address as server and router, HostMAC as the server's MAC (so a
// renewal sent to it is the server's), the guest's MAC as the only client
// with Guest reserved to it (the pool is that one address), the MTU and the
// DNS servers.
func (p Plan) DHCPConfig() dhcp.Config {
	return dhcp.Config{
		Server:       p.Host,
		ServerMAC:    p.HostMAC,
		PoolFirst:    p.Guest,
		PoolLast:     p.Guest,
		Router:       p.Host.Addr(),
		DNS:          p.DNS,
		MTU:          p.MTU,
		AllowedMACs:  []net.HardwareAddr{p.GuestMAC},
		Reservations: []dhcp.Reservation{{MAC: p.GuestMAC, IP: p.Guest}},
		// The server is the only one the guest's DHCP frames can reach
		// (the device consumes them), so it speaks for the subnet: a
		// request it has no record of gets a NAK and the client starts
		// afresh at once instead of waiting out its lease (RFC 2131 4.3.2).
		Authoritative: true,
	}
}

// String describes the plan for logs.
func (p Plan) String() string {
	return fmt.Sprintf("%s host %s guest %s (%s) server MAC %s mtu %d", p.Subnet, p.Host.Addr(), p.Guest, p.GuestMAC, p.HostMAC, p.MTU)
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) | (1<<(32-p.Bits()) - 1)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func addAddr(a netip.Addr, d uint32) netip.Addr {
	b := a.As4()
	v := (uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])) + d
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// DefaultPlan is the plan of the index-th /24 of DefaultBase with the host
// on .1 and the guest on .2, MACs derived from vmID (NIC 0): what an
// automatic NIC gets when that subnet is the first free one.
func DefaultPlan(index int, vmID string) (Plan, error) {
	sub, err := Subnet(netip.MustParsePrefix(DefaultBase), index)
	if err != nil {
		return Plan{}, err
	}
	g, h := MACs(vmID, 0)
	return NewPlan(netip.PrefixFrom(sub.Addr().Next(), sub.Bits()), netip.Addr{}, g, h)
}
