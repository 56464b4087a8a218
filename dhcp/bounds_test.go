package dhcp

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// A guest cycling client identifiers on its one MAC holds at most
// MaxLeasesPerMAC records; everyone else keeps getting addresses.
func TestClientIDCyclingBounded(t *testing.T) {
	other := net.HardwareAddr{0x52, 0x54, 0, 0, 0, 9}
	s, _ := newTestServer(t, func(c *Config) {
		c.AllowedMACs = append(c.AllowedMACs, other)
		c.NoRateLimit = true
	})
	c := newClient(t, s, nicMAC)
	for i := 0; i < 1000; i++ {
		c.handshake(dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte{0, byte(i >> 8), byte(i)}))
		if n := s.table.perOwner[[6]byte(nicMAC)]; n > DefaultMaxLeasesPerMAC {
			t.Fatalf("after %d ids the NIC holds %d records", i, n)
		}
	}
	if err := s.table.check(); err != nil {
		t.Fatal(err)
	}
	o := newClient(t, s, other)
	o.handshake()
	if c := s.Counters(); c.LeaseEvictions == 0 {
		t.Error("no evictions counted")
	}
}

// With AllowAnyMAC a guest cycling chaddr and source MAC cannot grow the
// table past MaxLeases.
func TestMACCyclingBounded(t *testing.T) {
	s, clk := newTestServer(t, func(c *Config) {
		c.AllowAnyMAC = true
		c.MaxLeases = 8
		c.NoRateLimit = true
	})
	for i := 0; i < 2000; i++ {
		c := newClient(t, s, net.HardwareAddr{2, 0, byte(i >> 16), byte(i >> 8), byte(i), 1})
		if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != VerdictOffer && v != DropTableFull && v != DropPoolExhausted {
			t.Fatalf("DISCOVER %d: %v", i, v)
		}
		if s.table.used() > 8 || len(s.table.byKey) > 8 || len(s.table.perOwner) > 8 {
			t.Fatalf("table grew to %d records, %d keys, %d owners", s.table.used(), len(s.table.byKey), len(s.table.perOwner))
		}
		clk.t += time.Millisecond
	}
	if err := s.table.check(); err != nil {
		t.Fatal(err)
	}
	// Bound leases fill the table; offers are taken back, bound leases are not.
	s2, _ := newTestServer(t, func(c *Config) { c.AllowAnyMAC = true; c.MaxLeases = 4; c.NoRateLimit = true })
	for i := 0; i < 4; i++ {
		newClient(t, s2, net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}).handshake()
	}
	late := newClient(t, s2, net.HardwareAddr{2, 0, 0, 0, 2, 0})
	if v, _ := late.send(late.msg(dhcpv4.MessageTypeDiscover), nil); v != DropTableFull {
		t.Fatalf("full table of bound leases: %v", v)
	}
	if s2.rateSourcesBounded() != nil {
		t.Fatal(s2.rateSourcesBounded())
	}
}

func (s *Server) rateSourcesBounded() error {
	if s.limiter != nil && len(s.limiter.index) > maxRateSources {
		return errTooMany
	}
	return nil
}

var errTooMany = bytes.ErrTooLarge

func TestRateLimit(t *testing.T) {
	s, clk := newTestServer(t, func(c *Config) { c.RatePerSecond = 10; c.RateBurst = 5 })
	c := newClient(t, s, nicMAC)
	var ok, limited int
	for i := 0; i < 20; i++ {
		switch v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v {
		case VerdictOffer:
			ok++
		case DropRateLimited:
			limited++
		default:
			t.Fatalf("verdict %v", v)
		}
	}
	if ok != 5 || limited != 15 {
		t.Fatalf("burst of 5: %d passed, %d limited", ok, limited)
	}
	clk.t += 300 * time.Millisecond // 3 more at 10/s
	ok = 0
	for i := 0; i < 10; i++ {
		if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v == VerdictOffer {
			ok++
		}
	}
	if ok != 3 {
		t.Fatalf("after 300ms at 10/s: %d passed, want 3", ok)
	}
	if got := s.Counters().DropRateLimited; got != 22 {
		t.Errorf("drop_rate_limited %d", got)
	}
	// Non-DHCP frames are not rate limited.
	arp := clientFrame(nil).bytes()
	arp[12], arp[13] = 0x08, 0x06
	for i := 0; i < 50; i++ {
		if _, v := s.HandleFrame(arp, nil); v != VerdictNotDHCP {
			t.Fatalf("ARP: %v", v)
		}
	}
}

func TestRateLimiterSourcesBounded(t *testing.T) {
	r := newRateLimiter(1, 1, 1000000)
	now := time.Duration(0)
	for i := 0; i < 10000; i++ {
		r.allow([6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)}, now)
		if len(r.index) > maxRateSources || len(r.keys) > maxRateSources {
			t.Fatalf("limiter table grew to %d", len(r.index))
		}
	}
	// Sources beyond the table share one bucket: a cycling guest gets one
	// frame per interval overall, not one per new MAC.
	passed := 0
	for i := 0; i < 1000; i++ {
		if r.allow([6]byte{2, 0, 0, 1, byte(i >> 8), byte(i)}, now) {
			passed++
		}
	}
	if passed > 1 {
		t.Errorf("%d frames from fresh MACs passed with a full table", passed)
	}
}

// Clocks: far-future readings (2038, past 2106 as nanoseconds since 1970),
// a clock stepping backwards, and leases near 2^32 seconds.
func TestClockIndependence(t *testing.T) {
	starts := map[string]time.Duration{
		"boot":      0,
		"2038":      time.Duration(1<<31) * time.Second,
		"past 2106": time.Duration(1<<32+12345) * time.Second,
		"near max":  maxDuration - 30*time.Hour,
	}
	for name, start := range starts {
		t.Run(name, func(t *testing.T) {
			clk := &fakeClock{t: start}
			cfg := testConfig(clk)
			s, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c := newClient(t, s, nicMAC)
			ack := c.handshake()
			if lt := ack.msg.IPAddressLeaseTime(0); lt != time.Hour {
				t.Fatalf("lease %v", lt)
			}
			clk.t += 59 * time.Minute
			if l := s.Leases(); len(l) != 1 || l[0].State != "bound" || l[0].Remaining != time.Minute {
				t.Fatalf("leases %+v", l)
			}
			clk.t -= 24 * time.Hour // host clock stepped back: time holds
			if l := s.Leases(); l[0].Remaining != time.Minute {
				t.Fatalf("after stepping back: %+v", l)
			}
			clk.t += 26 * time.Hour
			if l := s.Leases(); l[0].Remaining != 0 {
				t.Fatalf("lease did not expire: %+v", l)
			}
			if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != VerdictOffer {
				t.Fatal(v)
			}
		})
	}
}

func TestLongLeases(t *testing.T) {
	tests := []struct {
		name      string
		cfg       time.Duration
		ask       uint32 // option 51 in the request, 0 = none
		wantLease uint32
		wantT1    uint32 // 0 = absent
		wantT2    uint32
		remaining time.Duration
	}{
		{"infinite", InfiniteLease, 0, 0xffffffff, 0, 0, -1},
		{"infinite, client asks 0xfffffffe", InfiniteLease, 0xfffffffe, 0xfffffffe, 0x7fffffff, 0xdffffffe, time.Duration(0xfffffffe) * time.Second},
		{"0xfffffffe configured", time.Duration(0xfffffffe) * time.Second, 0, 0xfffffffe, 0x7fffffff, 0xdffffffe, time.Duration(0xfffffffe) * time.Second},
		{"client asks 0xffffffff of a 1h server", time.Hour, 0xffffffff, 3600, 1800, 3150, time.Hour},
		{"client asks 10s, floor 60s", time.Hour, 10, 60, 30, 52, time.Minute},
		{"client asks 0", time.Hour, 0, 3600, 1800, 3150, time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, start := range []time.Duration{0, time.Duration(1<<32) * time.Second, maxDuration - time.Hour, maxDuration - 2*time.Hour} {
				s, clk := newTestServer(t, func(c *Config) { c.LeaseTime = tc.cfg })
				clk.t = start
				c := newClient(t, s, nicMAC)
				var mods []dhcpv4.Modifier
				if tc.ask != 0 {
					mods = append(mods, dhcpv4.WithLeaseTime(tc.ask))
				}
				ack := c.handshake(mods...)
				o := ack.msg.Options
				if got := binary.BigEndian.Uint32(o.Get(dhcpv4.OptionIPAddressLeaseTime)); got != tc.wantLease {
					t.Errorf("lease %#x, want %#x", got, tc.wantLease)
				}
				t1, t2 := o.Get(dhcpv4.OptionRenewTimeValue), o.Get(dhcpv4.OptionRebindingTimeValue)
				if tc.wantT1 == 0 {
					if t1 != nil || t2 != nil {
						t.Errorf("T1/T2 sent for an infinite lease")
					}
				} else if binary.BigEndian.Uint32(t1) != tc.wantT1 || binary.BigEndian.Uint32(t2) != tc.wantT2 {
					t.Errorf("T1 %d T2 %d, want %d %d", binary.BigEndian.Uint32(t1), binary.BigEndian.Uint32(t2), tc.wantT1, tc.wantT2)
				}
				want := tc.remaining
				if want > 0 && start >= maxDuration-want {
					want = -1 // saturated: the lease outlives any clock reading
				}
				if l := s.Leases(); len(l) != 1 || l[0].Remaining != want {
					t.Errorf("start %v: leases %+v, want remaining %v", start, l, want)
				}
			}
		})
	}
}

// Replies respect option 57 clamped to 576..MTU, and are at least 300 bytes.
func TestMaxMessageSize(t *testing.T) {
	// Enough configuration to overflow a 576-byte message: 16 routes and
	// 8 DNS servers, plus a 255-byte client id echoed back.
	var routes []Route
	for i := 0; i < MaxRoutes; i++ {
		routes = append(routes, Route{Dest: netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16, byte(i), 0}), 24), Gateway: routerIP})
	}
	var dns []netip.Addr
	for i := 0; i < MaxDNSServers; i++ {
		dns = append(dns, netip.AddrFrom4([4]byte{10, 0, 2, byte(100 + i)}))
	}
	big := func(c *Config) {
		c.Routes, c.DNS, c.MTU, c.Domain = routes, dns, 1500, strings.Repeat("a", 60)+".example"
	}
	longID := append([]byte{0}, bytes.Repeat([]byte{'i'}, 254)...)
	tests := []struct {
		opt57  []byte // nil = absent
		mtu    int
		maxLen int // largest IP datagram allowed
	}{
		{nil, 1500, 576},
		{[]byte{0, 0}, 1500, 576},
		{[]byte{0, 1}, 1500, 576},
		{[]byte{0x01, 0x07}, 1500, 576}, // 263
		{[]byte{0x01, 0x08}, 1500, 576}, // 264
		{[]byte{0x02, 0x3f}, 1500, 576}, // 575
		{[]byte{0x02, 0x40}, 1500, 576},
		{[]byte{0x03, 0x00}, 1500, 768},
		{[]byte{0x05, 0xdc}, 1500, 1500},
		{[]byte{0xff, 0xff}, 1500, 1500},
		{[]byte{0xff, 0xff}, 1000, 1000},
		{[]byte{0xff, 0xff}, 576, 576},
	}
	for _, tc := range tests {
		s, _ := newTestServer(t, func(c *Config) { big(c); c.MTU = tc.mtu })
		c := newClient(t, s, nicMAC)
		mods := []dhcpv4.Modifier{
			dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, longID),
			dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute),
		}
		if tc.opt57 != nil {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionMaximumDHCPMessageSize, tc.opt57))
		}
		v, r := c.send(c.msg(dhcpv4.MessageTypeDiscover, mods...), nil)
		if v != VerdictOffer {
			t.Fatalf("57=% x mtu %d: %v", tc.opt57, tc.mtu, v)
		}
		ipLen := 28 + len(r.payload)
		if ipLen > tc.maxLen || len(r.payload) < 300 {
			t.Errorf("57=% x mtu %d: reply datagram %d bytes, limit %d", tc.opt57, tc.mtu, ipLen, tc.maxLen)
		}
		if r.msg.MessageType() != dhcpv4.MessageTypeOffer || r.msg.ServerIdentifier() == nil || r.msg.IPAddressLeaseTime(0) == 0 {
			t.Errorf("57=% x: essential options missing", tc.opt57)
		}
		if tc.maxLen == 576 && s.Counters().ReplyOptionsOmitted == 0 {
			t.Errorf("57=% x: nothing omitted from a 576-byte reply of this size", tc.opt57)
		}
		if tc.maxLen == 1500 {
			if rt := r.msg.ClasslessStaticRoute(); len(rt) != MaxRoutes+1 {
				t.Errorf("57=% x: %d routes in a 1500-byte reply", tc.opt57, len(rt))
			}
		}
	}
}

func TestClasslessRoutes(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) {
		c.Routes = []Route{
			{Dest: netip.MustParsePrefix("192.168.50.0/24"), Gateway: netip.MustParseAddr("10.0.2.1")},
			{Dest: netip.MustParsePrefix("10.10.0.0/15"), Gateway: netip.MustParseAddr("10.0.2.5")},
			{Dest: netip.MustParsePrefix("203.0.113.7/32"), Gateway: netip.MustParseAddr("0.0.0.0")},
		}
	})
	c := newClient(t, s, nicMAC)
	_, r := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil)
	if r.msg.Options.Has(dhcpv4.OptionClasslessStaticRoute) {
		t.Error("option 121 sent without being requested (RFC 3442)")
	}
	_, r = c.send(c.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithRequestedOptions(dhcpv4.OptionClasslessStaticRoute)), nil)
	var got []string
	for _, rt := range r.msg.ClasslessStaticRoute() {
		got = append(got, rt.String())
	}
	want := "[route to 0.0.0.0/0 via 10.0.2.1 route to 192.168.50.0/24 via 10.0.2.1 route to 10.10.0.0/15 via 10.0.2.5 route to 203.0.113.7/32 via 0.0.0.0]"
	if g := strings.Join(strings.Fields(strings.Join(got, " ")), " "); "["+g+"]" != want {
		t.Errorf("routes %v\nwant %s", got, want)
	}
}

func TestCountersNames(t *testing.T) {
	var c Counters
	m := c.Map()
	if len(m) != int(numCounters)-1 {
		t.Fatalf("Counters has %d fields, want %d", len(m), numCounters-1)
	}
	for v := Verdict(1); v < numVerdicts; v++ {
		if _, ok := m[v.String()]; !ok || v.String() == "" {
			t.Errorf("verdict %d (%q) has no counter", v, v.String())
		}
		if v.IsDrop() != strings.HasPrefix(v.String(), "drop_") {
			t.Errorf("verdict %q: IsDrop %v", v, v.IsDrop())
		}
	}
	// Field order matches counterID order: each counter lands in its own field.
	var a counterArray
	for i := range a {
		a[i] = uint64(i)
	}
	snap := a.snapshot().Map()
	for id := counterID(1); id < numCounters; id++ {
		if snap[counterNames[id]] != uint64(id) {
			t.Errorf("counter %q reads %d, want %d", counterNames[id], snap[counterNames[id]], id)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	bad := map[string]func(*Config){
		"IPv6 server":          func(c *Config) { c.Server = netip.MustParsePrefix("fd00::1/64") },
		"/31":                  func(c *Config) { c.Server = netip.MustParsePrefix("10.0.2.2/31") },
		"server is network":    func(c *Config) { c.Server = netip.MustParsePrefix("10.0.2.0/24") },
		"multicast server MAC": func(c *Config) { c.ServerMAC = net.HardwareAddr{1, 0, 0, 0, 0, 1} },
		"short server MAC":     func(c *Config) { c.ServerMAC = net.HardwareAddr{2, 0, 0} },
		"pool reversed":        func(c *Config) { c.PoolFirst, c.PoolLast = c.PoolLast, c.PoolFirst },
		"pool outside subnet":  func(c *Config) { c.PoolLast = netip.MustParseAddr("10.0.3.5") },
		"pool has broadcast":   func(c *Config) { c.PoolLast = netip.MustParseAddr("10.0.2.255") },
		"router outside":       func(c *Config) { c.Router = netip.MustParseAddr("10.9.9.9") },
		"too many DNS":         func(c *Config) { c.DNS = make([]netip.Addr, 9) },
		"bad domain":           func(c *Config) { c.Domain = "evil;rm -rf" },
		"lease too long":       func(c *Config) { c.LeaseTime = InfiniteLease + time.Second },
		"negative lease":       func(c *Config) { c.LeaseTime = -time.Second },
		"MTU 575":              func(c *Config) { c.MTU = 575 },
		"MTU huge":             func(c *Config) { c.MTU = 70000 },
		"no allowed MACs":      func(c *Config) { c.AllowedMACs = nil },
		"reservation dup IP": func(c *Config) {
			c.Reservations = []Reservation{{MAC: nicMAC, IP: netip.MustParseAddr("10.0.2.9")}, {MAC: srvMAC, IP: netip.MustParseAddr("10.0.2.9")}}
		},
		"reservation on server IP": func(c *Config) { c.Reservations = []Reservation{{MAC: nicMAC, IP: srvIP}} },
		"reservation bad hostname": func(c *Config) {
			c.Reservations = []Reservation{{MAC: nicMAC, IP: netip.MustParseAddr("10.0.2.9"), Hostname: "a\nb"}}
		},
		"pool too large": func(c *Config) {
			c.Server = netip.MustParsePrefix("10.0.0.1/8")
			c.PoolFirst, c.PoolLast = netip.MustParseAddr("10.1.0.0"), netip.MustParseAddr("10.2.0.1")
		},
		"IPv6 route": func(c *Config) {
			c.Routes = []Route{{Dest: netip.MustParsePrefix("fd00::/8"), Gateway: srvIP}}
		},
	}
	for name, mod := range bad {
		cfg := testConfig(nil)
		mod(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(testConfig(nil)); err != nil {
		t.Fatal(err)
	}
}

// Guest-controlled strings reach logs escaped.
func TestLogEscaping(t *testing.T) {
	var buf bytes.Buffer
	s, _ := newTestServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	c := newClient(t, s, nicMAC)
	evil := "x\n level=ERROR msg=forged \x1b[2J\"\\" + strings.Repeat("A", 100)
	c.handshake(dhcpv4.WithOption(dhcpv4.OptHostName(evil)), dhcpv4.WithGeneric(dhcpv4.OptionClassIdentifier, []byte("\x00\xff\r")))
	bad := clientFrame(rawMessage(1, 1, 6, nicMAC, discoverOpts()))
	bad.badUDPChecksum = true
	s.HandleFrame(bad.bytes(), nil)
	out := buf.String()
	if !strings.Contains(out, `msg="dhcp: frame dropped" reason=drop_udp_checksum`) {
		t.Errorf("drop not logged:\n%s", out)
	}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if !strings.HasPrefix(line, "time=") {
			t.Errorf("a log record spans lines:\n%s", out)
		}
	}
	for _, bad := range []string{"\x1b", "\r", "\x00", "\xff"} {
		if strings.Contains(out, bad) {
			t.Errorf("log contains %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, `x\\x0a level=ERROR msg=forged \\x1b[2J\\x22\\x5c`) || !strings.Contains(out, "AAA...") {
		t.Errorf("escaped host name missing or not truncated:\n%s", out)
	}
}

// The server, router and reserved addresses inside the pool are never offered.
func TestPoolExclusions(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) {
		c.PoolFirst, c.PoolLast = netip.MustParseAddr("10.0.2.1"), netip.MustParseAddr("10.0.2.6")
		c.Reservations = []Reservation{{MAC: net.HardwareAddr{2, 0, 0, 0, 9, 9}, IP: netip.MustParseAddr("10.0.2.4")}}
		c.AllowAnyMAC = true
		c.NoRateLimit = true
	})
	var got []string
	for i := 0; i < 5; i++ {
		c := newClient(t, s, net.HardwareAddr{2, 0, 0, 0, 1, byte(i)})
		ack := c.handshake()
		got = append(got, ack.msg.YourIPAddr.String())
		if i == 2 {
			break
		}
	}
	if strings.Join(got, " ") != "10.0.2.3 10.0.2.5 10.0.2.6" {
		t.Fatalf("handed out %v", got)
	}
	c := newClient(t, s, net.HardwareAddr{2, 0, 0, 0, 1, 9})
	if v, _ := c.send(c.msg(dhcpv4.MessageTypeDiscover), nil); v != DropPoolExhausted {
		t.Fatalf("fourth client: %v", v)
	}
}

func TestConcurrentHandleFrame(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) {
		c.AllowAnyMAC, c.NoRateLimit = true, true
		c.PoolLast = netip.MustParseAddr("10.0.2.250")
	})
	done := make(chan struct{})
	for g := 0; g < 4; g++ {
		go func() {
			defer func() { done <- struct{}{} }()
			out := make([]byte, s.ReplyBufferSize())
			for i := 0; i < 50; i++ {
				mac := net.HardwareAddr{2, 0, 0, byte(g), 0, byte(i)}
				f := clientFrame(rawMessage(1, 1, 6, mac, discoverOpts()))
				f.src = mac
				reply, v := s.HandleFrame(f.bytes(), out)
				if v != VerdictOffer {
					t.Errorf("DISCOVER: %v", v)
					return
				}
				r, err := parseReply(reply)
				if err != nil {
					t.Errorf("offer: %v", err)
					return
				}
				yi := r.msg.YourIPAddr.To4()
				f = clientFrame(rawMessage(1, 1, 6, mac, []byte{53, 1, 3, 54, 4, 10, 0, 2, 2, 50, 4, yi[0], yi[1], yi[2], yi[3], 255}))
				f.src = mac
				if _, v := s.HandleFrame(f.bytes(), out); v != VerdictAck {
					t.Errorf("REQUEST: %v", v)
					return
				}
				_ = s.Counters()
				_ = s.Leases()
			}
		}()
	}
	for g := 0; g < 4; g++ {
		<-done
	}
	if c := s.Counters(); c.Ack != 200 {
		t.Fatalf("%d ACKs", c.Ack)
	}
	if err := s.table.check(); err != nil {
		t.Fatal(err)
	}
}
