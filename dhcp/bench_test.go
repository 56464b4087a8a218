package dhcp

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// BenchmarkHandshake measures one DISCOVER/OFFER plus REQUEST/ACK exchange
// per op through HandleFrame, the VMM's entry point, for a client whose lease
// exists, with the real monotonic clock and rate limiting on (set high).
func BenchmarkHandshake(b *testing.B) {
	s, err := New(Config{
		Server: testConfig(nil).Server, ServerMAC: srvMAC,
		PoolFirst: testConfig(nil).PoolFirst, PoolLast: testConfig(nil).PoolLast,
		Router: routerIP, DNS: testConfig(nil).DNS, Domain: "corral.test",
		AllowedMACs:   []net.HardwareAddr{nicMAC},
		RatePerSecond: 1e9, RateBurst: 1e9, GlobalRate: 1e9,
	})
	if err != nil {
		b.Fatal(err)
	}
	c := newClient(b, s, nicMAC)
	prl := dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionHostName, dhcpv4.OptionBroadcastAddress, dhcpv4.OptionInterfaceMTU)
	id := dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, append([]byte{1}, nicMAC...))
	discover := clientFrame(c.msg(dhcpv4.MessageTypeDiscover, prl, id).ToBytes()).bytes()
	request := clientFrame(c.msg(dhcpv4.MessageTypeRequest, prl, id, sidOpt(), reqIPOpt("10.0.2.15")).ToBytes()).bytes()
	out := make([]byte, s.ReplyBufferSize())
	// First handshake creates the lease; the loop measures the steady state.
	if _, v := s.HandleFrame(discover, out); v != VerdictOffer {
		b.Fatal(v)
	}
	if _, v := s.HandleFrame(request, out); v != VerdictAck {
		b.Fatal(v)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if _, v := s.HandleFrame(discover, out); v != VerdictOffer {
			b.Fatal(v)
		}
		if _, v := s.HandleFrame(request, out); v != VerdictAck {
			b.Fatal(v)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
}

// TestHandshakeDoesNotAllocate pins the benchmark's allocation target: once
// the client's lease exists, a handshake allocates nothing.
func TestHandshakeDoesNotAllocate(t *testing.T) {
	s, _ := newTestServer(t, func(c *Config) { c.RatePerSecond, c.RateBurst, c.GlobalRate = 1e9, 1e9, 1e9 })
	c := newClient(t, s, nicMAC)
	id := dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, append([]byte{1}, nicMAC...))
	discover := clientFrame(c.msg(dhcpv4.MessageTypeDiscover, id).ToBytes()).bytes()
	request := clientFrame(c.msg(dhcpv4.MessageTypeRequest, id, sidOpt(), reqIPOpt("10.0.2.15")).ToBytes()).bytes()
	out := make([]byte, s.ReplyBufferSize())
	s.HandleFrame(discover, out)
	s.HandleFrame(request, out)
	allocs := testing.AllocsPerRun(100, func() {
		if _, v := s.HandleFrame(discover, out); v != VerdictOffer {
			t.Fatal(v)
		}
		if _, v := s.HandleFrame(request, out); v != VerdictAck {
			t.Fatal(v)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per handshake", allocs)
	}
}
