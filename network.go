package corral

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/dhcp"
	"github.com/corral-vmm/corral/hostnet"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
	"github.com/corral-vmm/corral/virtio/virtionet/tap"
)

// Net is a virtio-net NIC. Its host side is a TAP device that Corral
// creates or opens, or an already-open Backend or File that the caller
// hands over. Unless NoDHCP is set, the built-in DHCP server answers the
// guest's DHCP from inside the VMM: those frames never reach the host.
//
// Addresses. With no Host, IP, Bridge, Backend or File, the TAP gets the
// first 10.200.N.0/24 (hostnet.DefaultBase, N = 0..255) that no host
// interface overlaps: the host side is .1, the guest .2. That allows 256
// such NICs on a host at once; more need Host, IP, Bridge or File. The
// choice is made under a host-wide lock (hostnet.StateDir, overridden by
// $CORRAL_STATE_DIR), so concurrent processes never pick the same subnet,
// and costs one address dump however many VMs run. MACs are derived from
// the machine's ID, so VMs differ.
type Net struct {
	// Tap is an existing TAP device to use; empty creates one for this
	// machine, which vanishes when the machine ends (crash included). At
	// most 15 bytes.
	Tap string
	// Backend is an already-open host side to use instead of a TAP, e.g.
	// virtionet.NewSocketBackend of one end of a socket pair. The machine
	// closes it when it ends. The host is not touched: Host (or the /24
	// around IP, or 10.200.0.0/24) only names the link's addresses for the
	// DHCP server.
	Backend virtionet.Backend
	// File is an already-open descriptor to use instead of a TAP, like
	// Cloud Hypervisor's --net fd= and crosvm's --tap-fd: an attached TAP
	// (with or without IFF_VNET_HDR), or one end of a SOCK_SEQPACKET or
	// SOCK_DGRAM socket pair carrying one Ethernet frame per message, which
	// needs no privilege at all. Corral takes it over when New opens the
	// NIC (closing File) and releases it when the machine ends. Addresses
	// as for Backend.
	File *os.File
	// MAC is the guest's MAC address; nil derives a locally administered
	// one from the machine's ID and the NIC's index.
	MAC net.HardwareAddr
	// IP is the address the DHCP server reserves for the guest. The zero
	// value is the first free address of the subnet (.2 after the host's
	// .1; on a bridge, the lowest one no other VM on it holds). Without
	// Host or Bridge, IP picks the subnet: its /24, with the host on the
	// first other address.
	IP netip.Addr
	// Host is the host side's address and the guest's subnet, e.g.
	// 10.0.5.1/24: the guest's router and DHCP server, given to the TAP.
	Host netip.Prefix
	// Bridge attaches the TAP to an existing bridge. The TAP then gets no
	// address unless Host is set: the DHCP server takes the bridge's IPv4
	// address and MAC as its own (the guest's router), and leases each VM
	// on the bridge its own address of that subnet (IP, or the lowest free
	// one), recorded under hostnet.StateDir so VMs of other processes on
	// this host do not collide. A bridge without an IPv4 address needs
	// Host or NoDHCP.
	Bridge string
	// DNS servers the DHCP server offers (none by default).
	DNS []netip.Addr
	// NoDHCP passes the guest's DHCP to the host instead of answering it.
	NoDHCP bool
	// Queues is the NIC's queue pairs, each with its own TAP queue and
	// device goroutines (1..virtionet.MaxQueuePairs); 0 means one per vCPU,
	// at most DefaultNetQueues, or one on an existing single-queue TAP.
	// With more than one the TAP is multi-queue (IFF_MULTI_QUEUE) and the
	// guest is offered VIRTIO_NET_F_MQ. A Backend or File brings its own
	// queues. A snapshot records the count the guest saw.
	Queues int `json:",omitempty"`
}

// DefaultNetQueues caps a NIC's default queue pairs (one per vCPU): past a
// few, more pairs cost goroutines and TAP descriptors for little gain.
const DefaultNetQueues = 8

// queues is the NIC's queue pairs on a machine with cpus vCPUs.
func (n *Net) queues(cpus int) int {
	if n.Queues != 0 {
		return n.Queues
	}
	return min(cpus, DefaultNetQueues)
}

// ParseNet parses the CLI form: tap=NAME, auto or fd=N, then any of mac=MAC,
// ip=IP, host=IP/PREFIX, bridge=NAME, dns=IP[+IP...], dhcp=off, queues=N.
// fd=N hands over descriptor N (an attached TAP, or a SOCK_SEQPACKET or
// SOCK_DGRAM socket) as File: parse each fd once. queues=N gives the NIC N
// queue pairs (default one per vCPU, at most DefaultNetQueues).
func ParseNet(s string) (Net, error) {
	var n Net
	// The descriptor becomes an *os.File only once all of s parsed: a File
	// left behind by an error would close descriptor N from its finalizer,
	// whoever holds that number by then.
	fd := -1
	for i, p := range strings.Split(s, ",") {
		k, v, hasV := strings.Cut(p, "=")
		if i == 0 && p == "auto" {
			continue
		}
		var err error
		switch {
		case k == "tap" && hasV && v != "":
			n.Tap = v
		case k == "fd" && hasV && fd < 0:
			if fd, err = strconv.Atoi(v); err == nil && fd < 0 {
				err = errors.New("negative descriptor")
			}
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
		case k == "queues" && hasV:
			if n.Queues, err = strconv.Atoi(v); err == nil && (n.Queues < 1 || n.Queues > virtionet.MaxQueuePairs) {
				err = fmt.Errorf("want a number from 1 to %d", virtionet.MaxQueuePairs)
			}
		default:
			return Net{}, fmt.Errorf("net %q: unknown option %q (want tap=NAME, auto or fd=N, mac=, ip=, host=, bridge=, dns=, dhcp=off, queues=N)", s, p)
		}
		if err != nil {
			return Net{}, fmt.Errorf("net %q: %s: %w", s, k, err)
		}
	}
	if fd >= 0 {
		n.File = os.NewFile(uintptr(fd), "fd "+strconv.Itoa(fd))
	}
	return n, nil
}

// validate checks everything that can be checked before KVM is opened,
// the bridge's existence and subnet and the descriptor's validity
// included, so each mistake is a configuration error.
func (n *Net) validate() error {
	if n.Backend != nil && n.File != nil {
		return errors.New("both Backend and File are set: give one host side")
	}
	if (n.Backend != nil || n.File != nil) && (n.Tap != "" || n.Bridge != "") {
		return errors.New("a Backend or File is the host side: it takes no tap= or bridge=")
	}
	if n.Queues < 0 || n.Queues > virtionet.MaxQueuePairs {
		return fmt.Errorf("%d queue pairs (want 1..%d, or 0 for one per vCPU)", n.Queues, virtionet.MaxQueuePairs)
	}
	if (n.Backend != nil || n.File != nil) && n.Queues > 1 {
		return fmt.Errorf("a Backend or File brings its own queues: it takes no queues=%d", n.Queues)
	}
	if err := tap.CheckName(n.Tap); err != nil {
		return err
	}
	if err := tap.CheckName(n.Bridge); err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	if n.File != nil {
		rc, err := n.File.SyscallConn()
		if err == nil {
			cerr := rc.Control(func(fd uintptr) { _, err = unix.FcntlInt(fd, unix.F_GETFD, 0) })
			err = errors.Join(err, cerr)
		}
		if err != nil {
			return fmt.Errorf("descriptor %s is not open: %v", n.File.Name(), err)
		}
	}
	if n.MAC != nil {
		if err := hostnet.CheckMAC(n.MAC); err != nil {
			return planErr(err)
		}
	}
	for _, d := range n.DNS {
		if !d.Is4() || d.IsUnspecified() {
			return fmt.Errorf("DNS server %v is not an IPv4 address", d)
		}
	}
	if n.IP.IsValid() && !n.IP.Is4() {
		return fmt.Errorf("guest address %v is not IPv4", n.IP)
	}
	server := n.Host
	if n.Host.IsValid() {
		if err := hostnet.CheckHost(n.Host); err != nil {
			return planErr(err)
		}
	}
	if n.Bridge != "" {
		br, err := hostnet.LookupBridge(n.Bridge)
		if err != nil {
			return err
		}
		if !server.IsValid() {
			server = br.Addr
		}
		if !server.IsValid() && !n.NoDHCP {
			return fmt.Errorf("bridge %s has no IPv4 address for the DHCP server: give host=ADDR/LEN or dhcp=off", n.Bridge)
		}
	}
	if n.IP.IsValid() {
		var err error
		if server.IsValid() {
			mac := net.HardwareAddr{2, 0, 0, 0, 0, 1} // MACs are not known before the machine's ID
			_, err = hostnet.NewPlan(server, n.IP, mac, mac)
		} else {
			_, err = hostnet.SubnetAround(n.IP)
		}
		if err != nil {
			return planErr(err)
		}
	}
	return nil
}

// planErr drops hostnet's prefix from a plan error, for Validate's message.
func planErr(err error) error {
	return errors.New(strings.TrimPrefix(err.Error(), hostnet.ErrPlan.Error()+": "))
}

// NetworkStatus describes one NIC of a running machine, for inventories
// and tests.
type NetworkStatus struct {
	Tap    string             // the host TAP device; "" for a socket or other Backend
	Host   netip.Prefix       // the DHCP server's address (the guest's router), if any
	Guest  netip.Addr         // the address reserved for the guest, if any
	MAC    net.HardwareAddr   // the guest's MAC
	NIC    virtionet.Counters // frames through the device
	DHCP   *dhcp.Counters     // the DHCP server's counters; nil with NoDHCP
	Leases []dhcp.LeaseInfo   // the DHCP server's leases
}

// nic is one virtio-net device's host side.
type nic struct {
	dev   *virtionet.Device
	tap   string // the TAP's name, or ""
	dhcp  *dhcp.Server
	host  netip.Prefix
	guest netip.Addr
	mac   net.HardwareAddr
	// hostMAC is the host side's MAC, the guest's router in its ARP
	// cache: a restored machine's TAP takes it again.
	hostMAC net.HardwareAddr
}

// Networks reports the machine's NICs.
func (m *Machine) Networks() []NetworkStatus {
	var out []NetworkStatus
	for _, n := range m.plat.nics {
		s := NetworkStatus{Tap: n.tap, Host: n.host, Guest: n.guest, MAC: n.mac, NIC: n.dev.Counters()}
		if n.dhcp != nil {
			c := n.dhcp.Counters()
			s.DHCP = &c
			s.Leases = n.dhcp.Leases()
		}
		out = append(out, s)
	}
	return out
}

// createNets opens or creates each NIC's host side, starts its DHCP server
// and puts the virtio-net devices on the PCI bus. Errors that come from the
// configuration rather than the host wrap ErrConfig.
func (m *Machine) createNets() error {
	for i, cfg := range m.cfg.Nets {
		name := fmt.Sprintf("virtio-net %d", i)
		n, err := m.openNIC(i, cfg)
		if err != nil {
			if errors.Is(err, hostnet.ErrPlan) || errors.Is(err, hostnet.ErrNoBridge) || errors.Is(err, hostnet.ErrLeaseTaken) ||
				errors.Is(err, dhcp.ErrConfig) || errors.Is(err, tap.ErrNotTap) || errors.Is(err, tap.ErrSingleQueue) {
				return fmt.Errorf("%w: net %d: %w", ErrConfig, i, err)
			}
			return fmt.Errorf("corral: net %d: %w", i, err)
		}
		m.plat.nics = append(m.plat.nics, n)
		if err := m.addVirtio(name, n.dev); err != nil {
			return err
		}
		m.log.Info("vm.net", "id", m.id, "tap", n.tap, "host", n.host, "guest", n.guest, "mac", n.mac.String(), "dhcp", n.dhcp != nil)
	}
	return nil
}

// openNIC sets up NIC index's host side, plans its addresses, starts its
// DHCP server and builds its device. On error nothing is left behind.
func (m *Machine) openNIC(index int, cfg Net) (_ *nic, err error) {
	guestMAC, hostMAC := hostnet.MACs(m.id, index)
	if cfg.MAC != nil {
		guestMAC = cfg.MAC
	}
	if mac := m.restoredHostMAC(index); mac != nil {
		hostMAC = mac
	}
	var (
		be    virtionet.Backend
		t     *tap.Tap
		lease *hostnet.Lease
		host  = cfg.Host // the DHCP server's address
		guest = cfg.IP
	)
	defer func() {
		if err != nil {
			if be != nil {
				be.Close()
			}
			lease.Release()
		}
	}()
	if !host.IsValid() && guest.IsValid() && cfg.Bridge == "" {
		if host, err = hostnet.SubnetAround(guest); err != nil {
			return nil, err
		}
	}
	tapCfg := tap.Config{Name: cfg.Tap, Bridge: cfg.Bridge, Address: host, MAC: hostMAC, MTU: hostnet.DefaultMTU, Logger: m.log,
		Queues: cfg.queues(m.cfg.cpus())}
	// openTap opens the TAP with one queue per pair; an existing
	// single-queue TAP given without queues= gets one pair.
	openTap := func() (*tap.Tap, error) {
		t, err := tap.Open(tapCfg)
		if errors.Is(err, tap.ErrSingleQueue) && cfg.Queues == 0 {
			m.log.Info("vm.net: existing TAP is single-queue; one queue pair", "tap", cfg.Tap, "index", index)
			c := tapCfg
			c.Queues = 1
			t, err = tap.Open(c)
		}
		return t, err
	}
	serverMAC := hostMAC
	switch {
	case cfg.Backend != nil || cfg.File != nil:
		// A link of its own: nothing on the host to allocate or collide with.
		if !host.IsValid() {
			sub, _ := hostnet.Subnet(netip.MustParsePrefix(hostnet.DefaultBase), 0)
			host = netip.PrefixFrom(sub.Addr().Next(), sub.Bits())
		}
		if be = cfg.Backend; be == nil {
			if be, err = openFile(cfg.File, m.log); err != nil {
				return nil, err
			}
		}
		if t, _ = be.(*tap.Tap); t != nil && t.MAC() != nil {
			serverMAC = t.MAC()
		}
	case cfg.Bridge != "":
		if !host.IsValid() {
			br, err := hostnet.LookupBridge(cfg.Bridge)
			if err != nil {
				return nil, err
			}
			host, serverMAC = br.Addr, br.MAC
		}
		if host.IsValid() && !cfg.NoDHCP {
			if lease, err = hostnet.LeaseOnBridge(hostnet.StateDir(), cfg.Bridge, host.Masked(), []netip.Addr{host.Addr()}, guest, guestMAC); err != nil {
				return nil, err
			}
			guest = lease.Addr
		}
		if cfg.Host.IsValid() {
			err = hostnet.Locked(hostnet.StateDir(), func() (err error) { t, err = openTap(); return err })
		} else {
			t, err = openTap()
		}
		if err != nil {
			return nil, err
		}
		be = t
		if cfg.Host.IsValid() {
			serverMAC = t.MAC()
		}
	case host.IsValid():
		// The overlap check in tap.Open and the address it adds are atomic
		// with other Corral processes under the same lock.
		if err = hostnet.Locked(hostnet.StateDir(), func() (err error) { t, err = openTap(); return err }); err != nil {
			return nil, err
		}
		be, serverMAC = t, t.MAC()
	default:
		_, err = hostnet.ClaimSubnet(hostnet.StateDir(), netip.MustParsePrefix(hostnet.DefaultBase), func(sub netip.Prefix) (err error) {
			host = netip.PrefixFrom(sub.Addr().Next(), sub.Bits())
			tapCfg.Address = host
			t, err = openTap()
			return err
		})
		if err != nil {
			return nil, err
		}
		be, serverMAC = t, t.MAC()
	}
	if lease != nil {
		if mq, ok := be.(virtionet.MultiQueue); ok {
			be = leasedMultiQueue{mq, lease}
		} else {
			be = leasedBackend{be, lease}
		}
	}
	mtu := virtionet.DefaultMTU
	n := &nic{mac: guestMAC, hostMAC: serverMAC}
	if t != nil {
		n.tap, mtu = t.Name(), t.MTU()
	}
	if host.IsValid() {
		plan, err := hostnet.NewPlan(host, guest, guestMAC, serverMAC)
		if err != nil {
			return nil, err
		}
		plan.MTU, plan.DNS = mtu, cfg.DNS
		n.host, n.guest = plan.Host, plan.Guest
		if !cfg.NoDHCP {
			dc := plan.DHCPConfig()
			dc.Logger = m.log.With("dhcp", index)
			if n.dhcp, err = dhcp.New(dc); err != nil {
				return nil, err
			}
		}
	}
	dc := virtionet.Config{Backend: be, MAC: guestMAC, MTU: mtu, Logger: m.log.With("device", fmt.Sprintf("net%d", index))}
	if n.dhcp != nil {
		dc.Handler = n.dhcp
	}
	if n.dev, err = virtionet.New(dc); err != nil {
		return nil, err
	}
	return n, nil
}

// openFile adopts a descriptor: an attached TAP, else a frame socket.
func openFile(f *os.File, log *slog.Logger) (virtionet.Backend, error) {
	t, err := tap.FromFile(f, log)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, tap.ErrNotTap) {
		return nil, err
	}
	b, serr := virtionet.NewSocketBackend(f)
	if serr != nil {
		return nil, fmt.Errorf("%w: %s is neither a TAP (%v) nor a frame socket (%v)", tap.ErrNotTap, f.Name(), err, serr)
	}
	return b, nil
}

// leasedBackend gives a bridge lease back when the device closes its
// backend.
type leasedBackend struct {
	virtionet.Backend
	lease *hostnet.Lease
}

func (b leasedBackend) Close() error {
	return errors.Join(b.Backend.Close(), b.lease.Release())
}

// leasedMultiQueue is leasedBackend for a multi-queue TAP: it keeps the
// queues visible to the device.
type leasedMultiQueue struct {
	virtionet.MultiQueue
	lease *hostnet.Lease
}

func (b leasedMultiQueue) Close() error {
	return errors.Join(b.MultiQueue.Close(), b.lease.Release())
}
