package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// subnetLock is the lock file that serialises ClaimSubnet across processes.
const subnetLock = "subnets.lock"

// ClaimSubnet picks the first /24 of base that no IPv4 address of the
// calling thread's network namespace overlaps, and calls use with it, which
// must put an address of that subnet on the host (open the TAP with its
// host address) before it returns. The choice and use run under an
// exclusive lock on a file in dir (StateDir), so concurrent callers in any
// process on the host that use the same dir never pick the same subnet:
// each sees the addresses the others added. A /24 base has one candidate.
//
// Cost: one address dump per call, whatever the number of addresses, and
// the use callback; the lock is held for that long.
func ClaimSubnet(dir string, base netip.Prefix, use func(subnet netip.Prefix) error) (netip.Prefix, error) {
	if _, err := Subnet(base, 0); err != nil {
		return netip.Prefix{}, err
	}
	lock, err := lockFile(dir, subnetLock)
	if err != nil {
		return netip.Prefix{}, err
	}
	defer lock.Close()
	used, err := hostPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	n := 1 << (SubnetBits - base.Bits())
	for i := 0; i < n; i++ {
		sub, _ := Subnet(base, i)
		if overlapsAny(sub, used) {
			continue
		}
		if err := use(sub); err != nil {
			return netip.Prefix{}, err
		}
		return sub, nil
	}
	if n == 1 {
		return netip.Prefix{}, fmt.Errorf("%w: %v is in use on the host", ErrExhausted, base.Masked())
	}
	return netip.Prefix{}, fmt.Errorf("%w: all %d /%d subnets of %v are in use on the host", ErrExhausted, n, SubnetBits, base.Masked())
}

// hostPrefixes returns the subnets of every IPv4 address in the calling
// thread's network namespace, from one netlink dump (retried if a
// concurrent change interrupted it, since then it may be incomplete).
func hostPrefixes() ([]netip.Prefix, error) {
	var addrs []netlink.Addr
	var err error
	for try := 0; try < 5; try++ {
		addrs, err = netlink.AddrList(nil, netlink.FAMILY_V4)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("hostnet: list host addresses: %w", err)
	}
	out := make([]netip.Prefix, 0, len(addrs))
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, used []netip.Prefix) bool {
	for _, u := range used {
		if u.Overlaps(p) {
			return true
		}
	}
	return false
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

// Locked runs fn under the lock ClaimSubnet takes, for a caller that adds
// a host address it chose itself (an explicit TAP address): its overlap
// check and the address it adds are then atomic with every claim.
func Locked(dir string, fn func() error) error {
	lock, err := lockFile(dir, subnetLock)
	if err != nil {
		return err
	}
	defer lock.Close()
	return fn()
}
