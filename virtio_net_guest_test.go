package corral

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// TestNetGuestDHCPAndUDP boots the net test guest with a NIC on a TAP that
// Corral creates in a fresh network namespace: the guest gets its lease
// from the built-in DHCP server, then exchanges a UDP datagram with a
// socket on the host side of the TAP. After the machine ends the TAP is
// gone.
func TestNetGuestDHCPAndUDP(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "net")
	netnstest.Run(t, func() {
		out := console.NewBuffer(0)
		m, err := New(Config{Kernel: k, Cmdline: "udp=7777", Console: out, Nets: []Net{{}}})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		st := m.Networks()
		if len(st) != 1 || !st[0].Host.IsValid() {
			t.Fatalf("Networks() = %+v", st)
		}
		host, tapName := st[0].Host, st[0].Tap
		// The host side answers the guest's datagram (socket made inside the
		// namespace, so it stays there).
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: host.Addr().AsSlice(), Port: 7777})
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		got := make(chan string, 1)
		go func() {
			buf := make([]byte, 1500)
			pc.SetReadDeadline(time.Now().Add(120 * time.Second))
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			got <- string(buf[:n])
			pc.WriteToUDP([]byte("pong from host"), from)
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		e := waitExit(t, m, out)
		if e.Reason != ExitDebug || e.Code != guests.ExitOK {
			t.Fatalf("machine ended with %v; console:\n%s", e, out)
		}
		for _, want := range []string{
			fmt.Sprintf("net: lease %s/24 router %s", st[0].Guest, host.Addr()),
			"net: udp reply from " + host.Addr().String() + ":7777: pong from host",
			"net: ok",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("console lacks %q:\n%s", want, out)
			}
		}
		select {
		case msg := <-got:
			if strings.HasPrefix(msg, "error") {
				t.Errorf("host socket: %s", msg)
			}
		default:
			t.Error("the host socket got no datagram")
		}
		after := m.Networks()[0]
		// The guest's address is a reservation, which the server keeps no
		// lease record for: its counters show the handshake.
		if after.DHCP == nil || after.DHCP.Offer != 1 || after.DHCP.Ack != 1 || after.NIC.HandlerConsumed < 2 {
			t.Errorf("DHCP counters %+v, NIC counters %+v: want one offer and one ack", after.DHCP, after.NIC)
		}
		// Nothing left behind: the TAP Corral created is gone.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := netlink.LinkByName(tapName); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("TAP %s still exists after the machine ended", tapName)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

func TestParseNet(t *testing.T) {
	n, err := ParseNet("tap=tap7,mac=02:00:00:00:00:09,ip=10.9.0.5,host=10.9.0.1/24,dns=1.1.1.1+9.9.9.9,dhcp=off")
	if err != nil {
		t.Fatal(err)
	}
	if n.Tap != "tap7" || n.MAC.String() != "02:00:00:00:00:09" || n.IP.String() != "10.9.0.5" ||
		n.Host.String() != "10.9.0.1/24" || len(n.DNS) != 2 || !n.NoDHCP {
		t.Errorf("ParseNet = %+v", n)
	}
	if n, err := ParseNet("auto"); err != nil || n.Tap != "" {
		t.Errorf("ParseNet(auto) = %+v, %v", n, err)
	}
	for _, bad := range []string{"tap=", "mac=zz", "ip=1.2.3", "host=10.0.0.1", "dhcp=maybe", "speed=fast", "dns=1.1.1.1+x"} {
		if _, err := ParseNet(bad); err == nil {
			t.Errorf("ParseNet(%q) accepted", bad)
		}
	}
	k := guests.BuildT(t, "hello")
	for _, bad := range []Net{
		{MAC: net.HardwareAddr{1, 0, 0, 0, 0, 1}},
		{Host: mustPrefix("10.0.0.1/31")},
		{Host: mustPrefix("10.0.0.1/24"), IP: mustAddr("10.0.1.5")},
		{Host: mustPrefix("10.0.0.1/24"), IP: mustAddr("10.0.0.1")},
	} {
		if err := (&Config{Kernel: k, Nets: []Net{bad}}).Validate(); err == nil || !strings.Contains(err.Error(), "net 0") {
			t.Errorf("Validate with net %+v: %v", bad, err)
		}
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }
