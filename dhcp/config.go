package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Defaults applied by New for zero Config fields.
const (
	DefaultLeaseTime       = time.Hour
	DefaultMTU             = 1500
	DefaultMaxLeases       = 4096
	DefaultMaxLeasesPerMAC = 4
	DefaultRatePerSecond   = 50
	DefaultRateBurst       = 20
	DefaultGlobalRate      = 1000
	DefaultOfferHold       = time.Minute
	DefaultDeclineHold     = 10 * time.Minute
)

// InfiniteLease as Config.LeaseTime grants leases of 0xffffffff seconds, which
// RFC 2131 defines as infinite.
const InfiniteLease = time.Duration(0xffffffff) * time.Second

// Limits on configuration sizes, so every reply fits a 576-byte message.
const (
	MaxPoolSize     = 1 << 16
	MaxDNSServers   = 8
	MaxRoutes       = 16
	MaxReservations = 4096
	MaxMTU          = 9216
	minLeaseTime    = time.Second
	minGrantedLease = time.Minute // floor for a client's own shorter lease request
	maxLabelLen     = 63
	maxNameLen      = 253
)

// ErrConfig is wrapped by every configuration error New returns.
var ErrConfig = errors.New("dhcp: invalid config")

// Reservation binds a client MAC address to a fixed IPv4 address (outside or
// inside the pool) and optionally a host name sent as option 12.
type Reservation struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
}

// Route is one classless static route (RFC 3442, option 121).
type Route struct {
	Dest    netip.Prefix // destination network
	Gateway netip.Addr   // next hop; 0.0.0.0 means on-link
}

// Config is a DHCP server's configuration. New validates it; zero optional
// fields take the Default* values.
type Config struct {
	Server    netip.Prefix     // server address and served subnet, e.g. 10.0.2.2/24
	ServerMAC net.HardwareAddr // source MAC of replies; unicast requests must be sent to it
	PoolFirst netip.Addr       // first dynamic address
	PoolLast  netip.Addr       // last dynamic address (inclusive)
	Router    netip.Addr       // default gateway (option 3); invalid zero value = none
	DNS       []netip.Addr     // DNS servers (option 6), at most MaxDNSServers
	Domain    string           // domain name (option 15); empty = none
	LeaseTime time.Duration    // lease length; 0 = DefaultLeaseTime; InfiniteLease = infinite
	MTU       int              // interface MTU (option 26) and cap on replies; 0 = DefaultMTU
	Routes    []Route          // classless static routes (option 121), sent when requested

	Reservations []Reservation      // static MAC → IP (and host name) bindings
	AllowedMACs  []net.HardwareAddr // MACs the guest's NIC owns; requests for others are dropped
	AllowAnyMAC  bool               // serve any chaddr (e.g. a guest bridging other machines)

	// Authoritative says this server is the only one for its subnet. A
	// REQUEST (INIT-REBOOT, RENEWING, REBINDING) from a client it has no
	// record of is then NAKed, so the client restarts at once; when false
	// (the default) it gets no reply, as RFC 2131 4.3.2 requires of a server
	// that may share the link with others. Never an ACK either way.
	Authoritative bool

	Clock  Clock        // time source; nil = NewMonotonicClock()
	Logger *slog.Logger // nil = discard

	MaxLeases       int           // lease table size; 0 = min(pool size, DefaultMaxLeases)
	MaxLeasesPerMAC int           // lease records one source MAC may hold; 0 = DefaultMaxLeasesPerMAC
	RatePerSecond   int           // per-source-MAC sustained rate; 0 = DefaultRatePerSecond
	RateBurst       int           // per-source-MAC burst; 0 = DefaultRateBurst
	GlobalRate      int           // all sources together, per second and burst; 0 = DefaultGlobalRate
	NoRateLimit     bool          // disable rate limiting (tests and benchmarks)
	OfferHold       time.Duration // how long an offered address is held; 0 = DefaultOfferHold
	DeclineHold     time.Duration // how long a declined address is quarantined; 0 = DefaultDeclineHold
}

// settings is a validated Config in the forms the server uses.
type settings struct {
	serverIP, mask, network, bcast uint32
	prefixLen                      int
	serverMAC                      [ethAddrLen]byte
	poolFirst, poolLast            uint32
	router                         uint32 // 0 = none
	dns                            []uint32
	domain                         string
	leaseSecs                      uint32 // 0xffffffff = infinite
	mtu                            int
	routes                         []Route
	reservations                   map[[ethAddrLen]byte]reservation
	reservedIPs                    map[uint32]bool
	allowed                        map[[ethAddrLen]byte]bool
	allowAny                       bool
	authoritative                  bool
	maxLeases, maxPerMAC           int
	rate, burst, globalRate        int
	noRateLimit                    bool
	offerHold, declineHold         time.Duration
}

type reservation struct {
	ip       uint32
	hostname []byte // empty = no option 12
}

func cfgErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
}

func ip4(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func addr4(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

func mac6(hw net.HardwareAddr) ([ethAddrLen]byte, bool) {
	var m [ethAddrLen]byte
	if len(hw) != ethAddrLen {
		return m, false
	}
	copy(m[:], hw)
	return m, true
}

// validName reports whether s is a DNS name of letters, digits, hyphens and
// dots, so nothing the server sends can inject shell or escape characters.
func validName(s string) bool {
	if s == "" || len(s) > maxNameLen {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
		label++
		if label > maxLabelLen {
			return false
		}
	}
	return true
}

func (c *Config) validate() (*settings, error) {
	s := &settings{}
	if !c.Server.IsValid() || !c.Server.Addr().Is4() {
		return nil, cfgErr("server %v is not an IPv4 prefix", c.Server)
	}
	s.prefixLen = c.Server.Bits()
	if s.prefixLen < 1 || s.prefixLen > 30 {
		return nil, cfgErr("server prefix /%d leaves no room for clients", s.prefixLen)
	}
	s.serverIP = ip4(c.Server.Addr())
	s.mask = ^uint32(0) << (32 - s.prefixLen)
	s.network = s.serverIP & s.mask
	s.bcast = s.network | ^s.mask
	inSubnet := func(v uint32) bool { return v&s.mask == s.network && v != s.network && v != s.bcast }
	if !inSubnet(s.serverIP) {
		return nil, cfgErr("server address %v is the subnet's network or broadcast address", c.Server.Addr())
	}
	var ok bool
	if s.serverMAC, ok = mac6(c.ServerMAC); !ok || s.serverMAC[0]&1 != 0 || s.serverMAC == [ethAddrLen]byte{} {
		return nil, cfgErr("server MAC %v is not a unicast Ethernet address", c.ServerMAC)
	}
	if !c.PoolFirst.Is4() || !c.PoolLast.Is4() {
		return nil, cfgErr("pool %v-%v is not an IPv4 range", c.PoolFirst, c.PoolLast)
	}
	s.poolFirst, s.poolLast = ip4(c.PoolFirst), ip4(c.PoolLast)
	if s.poolFirst > s.poolLast || !inSubnet(s.poolFirst) || !inSubnet(s.poolLast) {
		return nil, cfgErr("pool %v-%v is not an ascending range of host addresses in %v", c.PoolFirst, c.PoolLast, c.Server.Masked())
	}
	if uint64(s.poolLast)-uint64(s.poolFirst)+1 > MaxPoolSize {
		return nil, cfgErr("pool %v-%v has more than %d addresses", c.PoolFirst, c.PoolLast, MaxPoolSize)
	}
	if c.Router.IsValid() {
		if !c.Router.Is4() || !inSubnet(ip4(c.Router)) {
			return nil, cfgErr("router %v is not a host address in %v", c.Router, c.Server.Masked())
		}
		s.router = ip4(c.Router)
	}
	if len(c.DNS) > MaxDNSServers {
		return nil, cfgErr("%d DNS servers, at most %d", len(c.DNS), MaxDNSServers)
	}
	for _, d := range c.DNS {
		if !d.Is4() || d.IsUnspecified() {
			return nil, cfgErr("DNS server %v is not an IPv4 address", d)
		}
		s.dns = append(s.dns, ip4(d))
	}
	if c.Domain != "" && !validName(c.Domain) {
		return nil, cfgErr("domain %q is not a DNS name", c.Domain)
	}
	s.domain = c.Domain
	lt := c.LeaseTime
	if lt == 0 {
		lt = DefaultLeaseTime
	}
	if lt < minLeaseTime || lt > InfiniteLease {
		return nil, cfgErr("lease time %v outside %v..%v", lt, minLeaseTime, InfiniteLease)
	}
	s.leaseSecs = uint32(lt / time.Second)
	s.mtu = c.MTU
	if s.mtu == 0 {
		s.mtu = DefaultMTU
	}
	if s.mtu < minMaxMessageSize || s.mtu > MaxMTU {
		return nil, cfgErr("MTU %d outside %d..%d", s.mtu, minMaxMessageSize, MaxMTU)
	}
	if len(c.Routes) > MaxRoutes {
		return nil, cfgErr("%d routes, at most %d", len(c.Routes), MaxRoutes)
	}
	for _, r := range c.Routes {
		if !r.Dest.IsValid() || !r.Dest.Addr().Is4() || !r.Gateway.Is4() {
			return nil, cfgErr("route %v via %v is not IPv4", r.Dest, r.Gateway)
		}
		s.routes = append(s.routes, Route{Dest: r.Dest.Masked(), Gateway: r.Gateway})
	}
	if len(c.Reservations) > MaxReservations {
		return nil, cfgErr("%d reservations, at most %d", len(c.Reservations), MaxReservations)
	}
	s.reservations = make(map[[ethAddrLen]byte]reservation, len(c.Reservations))
	s.reservedIPs = make(map[uint32]bool, len(c.Reservations))
	for _, r := range c.Reservations {
		m, ok := mac6(r.MAC)
		if !ok || m[0]&1 != 0 || m == [ethAddrLen]byte{} {
			return nil, cfgErr("reservation MAC %v is not a unicast Ethernet address", r.MAC)
		}
		if !r.IP.Is4() || !inSubnet(ip4(r.IP)) || ip4(r.IP) == s.serverIP || ip4(r.IP) == s.router {
			return nil, cfgErr("reservation %v: %v is not a free host address in %v", r.MAC, r.IP, c.Server.Masked())
		}
		if r.Hostname != "" && !validName(r.Hostname) {
			return nil, cfgErr("reservation %v: host name %q is not a DNS name", r.MAC, r.Hostname)
		}
		if _, dup := s.reservations[m]; dup {
			return nil, cfgErr("MAC %v reserved twice", r.MAC)
		}
		if s.reservedIPs[ip4(r.IP)] {
			return nil, cfgErr("address %v reserved twice", r.IP)
		}
		s.reservations[m] = reservation{ip: ip4(r.IP), hostname: []byte(r.Hostname)}
		s.reservedIPs[ip4(r.IP)] = true
	}
	s.allowAny = c.AllowAnyMAC
	s.authoritative = c.Authoritative
	s.allowed = make(map[[ethAddrLen]byte]bool, len(c.AllowedMACs))
	for _, hw := range c.AllowedMACs {
		m, ok := mac6(hw)
		if !ok || m[0]&1 != 0 || m == [ethAddrLen]byte{} {
			return nil, cfgErr("allowed MAC %v is not a unicast Ethernet address", hw)
		}
		s.allowed[m] = true
	}
	if !s.allowAny && len(s.allowed) == 0 {
		return nil, cfgErr("no allowed client MACs: set AllowedMACs to the NIC's MAC, or AllowAnyMAC")
	}
	poolSize := int(s.poolLast - s.poolFirst + 1)
	s.maxLeases = c.MaxLeases
	if s.maxLeases == 0 {
		s.maxLeases = min(poolSize, DefaultMaxLeases)
	}
	if s.maxLeases < 1 || s.maxLeases > MaxPoolSize {
		return nil, cfgErr("max leases %d outside 1..%d", s.maxLeases, MaxPoolSize)
	}
	s.maxPerMAC = c.MaxLeasesPerMAC
	if s.maxPerMAC == 0 {
		s.maxPerMAC = DefaultMaxLeasesPerMAC
	}
	if s.maxPerMAC < 1 {
		return nil, cfgErr("max leases per MAC %d below 1", s.maxPerMAC)
	}
	s.noRateLimit = c.NoRateLimit
	s.rate, s.burst, s.globalRate = c.RatePerSecond, c.RateBurst, c.GlobalRate
	if s.rate == 0 {
		s.rate = DefaultRatePerSecond
	}
	if s.burst == 0 {
		s.burst = DefaultRateBurst
	}
	if s.globalRate == 0 {
		s.globalRate = DefaultGlobalRate
	}
	if s.rate < 1 || s.burst < 1 || s.globalRate < 1 || s.rate > 1e9 || s.globalRate > 1e9 || s.burst > 1e9 {
		return nil, cfgErr("rate limits %d/s burst %d global %d/s outside 1..1e9", s.rate, s.burst, s.globalRate)
	}
	s.offerHold, s.declineHold = c.OfferHold, c.DeclineHold
	if s.offerHold == 0 {
		s.offerHold = DefaultOfferHold
	}
	if s.declineHold == 0 {
		s.declineHold = DefaultDeclineHold
	}
	if s.offerHold < 0 || s.declineHold < 0 {
		return nil, cfgErr("negative offer or decline hold")
	}
	return s, nil
}
