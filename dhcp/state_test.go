package dhcp

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// leasedServer returns a server with a bound lease (nicMAC), an offer (a
// client ID from the same MAC) and a released record, and its clock.
func leasedServer(t testing.TB) (*Server, *fakeClock, netip.Addr) {
	t.Helper()
	s, clk := newTestServer(t, nil)
	ack := newClient(t, s, nicMAC).handshake()
	ip, _ := netip.AddrFromSlice(ack.msg.YourIPAddr.To4())
	clk.t += time.Minute
	c2 := newClient(t, s, nicMAC)
	if v, _ := c2.send(c2.msg(dhcpv4.MessageTypeDiscover, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte("second")))), nil); v != VerdictOffer {
		t.Fatalf("second DISCOVER: %v", v)
	}
	c3 := newClient(t, s, nicMAC)
	id := dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte("third")))
	ack3 := c3.handshake(id)
	rel := c3.msg(dhcpv4.MessageTypeRelease, id, dhcpv4.WithClientIP(ack3.msg.YourIPAddr),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(ack3.msg.ServerIdentifier())))
	if v, _ := c3.send(rel, nil); v != VerdictRelease {
		t.Fatalf("RELEASE: %v", v)
	}
	clk.t += 10 * time.Second
	return s, clk, ip
}

func TestStateRoundTrip(t *testing.T) {
	s, _, ip := leasedServer(t)
	want := s.Leases()
	if len(want) != 3 {
		t.Fatalf("%d lease records; want 3: %+v", len(want), want)
	}
	b, err := s.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	// A restored server's clock starts elsewhere; holds carry over.
	s2, clk2 := newTestServer(t, nil)
	clk2.t = 100 * time.Hour
	if err := s2.RestoreState(b); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	got := s2.Leases()
	key := func(l []LeaseInfo) map[string]LeaseInfo {
		m := map[string]LeaseInfo{}
		for _, x := range l {
			m[x.Client] = x
		}
		return m
	}
	if !reflect.DeepEqual(key(got), key(want)) {
		t.Fatalf("restored leases\n%+v\nwant\n%+v", got, want)
	}
	// The bound client keeps its address on the restored server, and a
	// new client does not get it.
	if ack := newClient(t, s2, nicMAC).handshake(); !ack.msg.YourIPAddr.Equal(ip.AsSlice()) {
		t.Fatalf("restored server gave %v to the bound client; want %v", ack.msg.YourIPAddr, ip)
	}
	if err := s2.table.check(); err != nil {
		t.Fatal(err)
	}
	// Saving the restored table gives the same records.
	b2, _ := s2.SaveState()
	s3, _ := newTestServer(t, nil)
	if err := s3.RestoreState(b2); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreStateRejects(t *testing.T) {
	s, _, _ := leasedServer(t)
	b, _ := s.SaveState()
	rec := stHeaderSize // the first record
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	otherPool := func(c *Config) {
		c.PoolFirst, c.PoolLast = netip.MustParseAddr("10.0.2.100"), netip.MustParseAddr("10.0.2.110")
	}
	for name, tc := range map[string]struct {
		data []byte
		cfg  func(*Config)
		want string
	}{
		"short":     {data: b[:5], want: "shorter than the 10-byte header"},
		"magic":     {data: mod(func(b []byte) []byte { b[0] = 'x'; return b }), want: "magic"},
		"version":   {data: mod(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[stVersion:], 9); return b }), want: "version 9"},
		"truncated": {data: b[:len(b)-1], want: "record 2: key of"},
		"trailing":  {data: append(append([]byte(nil), b...), 1), want: "1 bytes after the last record"},
		"count":     {data: mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[stCount:], 1<<20); return b }), want: "records for a table of"},
		"state":     {data: mod(func(b []byte) []byte { b[rec+recState] = 9; return b }), want: "record 0: state 9"},
		"pool":      {data: b, cfg: otherPool, want: "outside the pool 10.0.2.100-10.0.2.110"},
		"address":   {data: mod(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[rec+recIP:], 0x0a000202); return b }), want: "outside the pool"},
		"duplicate": {data: mod(func(b []byte) []byte { copy(b[rec+recIP:rec+recIP+4], b[b2(b)+recIP:]); return b }), want: "already has record"},
		"key":       {data: mod(func(b []byte) []byte { b[rec+recFixedSize] = 'Z'; return b }), want: "client key of"},
		"age":       {data: mod(func(b []byte) []byte { binary.LittleEndian.PutUint64(b[rec+recAge:], 1<<63); return b }), want: "age"},
	} {
		t.Run(name, func(t *testing.T) {
			s2, _ := newTestServer(t, tc.cfg)
			before := s2.Leases()
			err := s2.RestoreState(tc.data)
			if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v; want ErrState with %q", err, tc.want)
			}
			if !reflect.DeepEqual(s2.Leases(), before) {
				t.Fatal("a refused state changed the table")
			}
		})
	}
}

// b2 returns the offset of the second record of a saved state.
func b2(b []byte) int {
	return stHeaderSize + recFixedSize + int(binary.LittleEndian.Uint16(b[stHeaderSize+recKeyLen:]))
}
