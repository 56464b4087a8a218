package corral

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/hostnet"
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

// TestNetGuestOnSocketPair boots the net test guest with its NIC on one end
// of a socket pair (Net.File, as `--net fd=N`), with no root and no TAP: the
// built-in DHCP server leases the planned address, and the test, on the
// other end, plays the host: it answers the guest's ARP for its router and
// echoes its UDP datagram.
func TestNetGuestOnSocketPair(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "net")
	t.Setenv(hostnet.StateDirEnv, t.TempDir())
	vmEnd, peer := socketPairFiles(t)
	defer peer.Close()
	out := console.NewBuffer(0)
	m, err := New(Config{Kernel: k, Cmdline: "udp=7777", Console: out, Nets: []Net{{File: vmEnd}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	st := m.Networks()
	if len(st) != 1 || st[0].Tap != "" || st[0].Host != mustPrefix("10.200.0.1/24") || st[0].Guest != mustAddr("10.200.0.2") {
		t.Fatalf("Networks() = %+v", st)
	}
	_, hostMAC := hostnet.MACs(m.ID(), 0)
	got := make(chan string, 1)
	go playHost(peer, hostMAC, st[0].Host.Addr(), 7777, got)
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
		"net: lease 10.200.0.2/24 router 10.200.0.1",
		"net: router 10.200.0.1 is at " + hostMAC.String(),
		"net: udp reply from 10.200.0.1:7777: pong from host",
		"net: ok",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	if msg := <-got; !strings.HasPrefix(msg, "corral-net hello from 10.200.0.2") {
		t.Errorf("the host end got %q", msg)
	}
}

// playHost is the host on a socket-pair NIC: it answers ARP requests for
// ip as mac, and a UDP datagram to ip:port with "pong from host", sending
// the datagram's text to got. It returns when the VM's end closes.
func playHost(peer *os.File, mac net.HardwareAddr, ip netip.Addr, port uint16, got chan<- string) {
	me := ip.As4()
	buf := make([]byte, 2048)
	for {
		n, err := peer.Read(buf)
		if err != nil || n == 0 {
			return
		}
		f := buf[:n]
		if len(f) < 42 {
			continue
		}
		switch binary.BigEndian.Uint16(f[12:]) {
		case 0x0806: // ARP: request (op 1) for our address
			a := f[14:]
			if binary.BigEndian.Uint16(a[6:]) != 1 || !bytes.Equal(a[24:28], me[:]) {
				continue
			}
			r := make([]byte, 42)
			copy(r[0:6], f[6:12])
			copy(r[6:12], mac)
			binary.BigEndian.PutUint16(r[12:], 0x0806)
			copy(r[14:22], a[0:6]) // htype, ptype, hlen, plen
			binary.BigEndian.PutUint16(r[20:], 2)
			copy(r[22:28], mac)
			copy(r[28:32], me[:])
			copy(r[32:42], a[8:18]) // sender MAC and IP become the target
			peer.Write(r)
		case 0x0800: // IPv4 UDP to our port
			ip4 := f[14:]
			ihl := int(ip4[0]&0xf) * 4
			if ip4[9] != 17 || !bytes.Equal(ip4[16:20], me[:]) || len(ip4) < ihl+8 || binary.BigEndian.Uint16(ip4[ihl+2:]) != port {
				continue
			}
			udp := ip4[ihl:]
			msg := string(udp[8:binary.BigEndian.Uint16(udp[4:])])
			select {
			case got <- msg:
			default:
			}
			var to [4]byte
			copy(to[:], ip4[12:16])
			r := udpFrame(f[6:12], mac, me, to, port, binary.BigEndian.Uint16(udp[0:2]), []byte("pong from host"))
			peer.Write(r)
		}
	}
}

// udpFrame builds an Ethernet frame carrying a UDP datagram (no UDP
// checksum).
func udpFrame(dstMAC, srcMAC net.HardwareAddr, src, dst [4]byte, sport, dport uint16, payload []byte) []byte {
	r := make([]byte, 14+20+8+len(payload))
	copy(r[0:6], dstMAC)
	copy(r[6:12], srcMAC)
	binary.BigEndian.PutUint16(r[12:], 0x0800)
	h := r[14:34]
	h[0], h[8], h[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(h[2:], uint16(20+8+len(payload)))
	copy(h[12:16], src[:])
	copy(h[16:20], dst[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	u := r[34:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(8+len(payload)))
	copy(u[8:], payload)
	return r
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
