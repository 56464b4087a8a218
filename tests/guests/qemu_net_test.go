package guests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/dhcp"
	"github.com/corral-vmm/corral/hostnet"
)

// The net guest under QEMU's virtio-net-pci (modern only) with user-mode
// networking: slirp's DHCP server leases 10.0.2.15 with router 10.0.2.2,
// and slirp carries UDP for 10.0.2.2:PORT to the host's 127.0.0.1:PORT, where
// the test answers.

func qemuNet() []string {
	return []string{"-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0,disable-legacy=on"}
}

// udpEcho answers the first datagram on a fresh loopback port with
// "pong: " + the datagram, and sends what it received on got.
func udpEcho(t *testing.T) (int, <-chan string) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got := make(chan string, 1)
	go func() {
		defer close(got)
		buf := make([]byte, 2048)
		c.SetReadDeadline(time.Now().Add(qemuTimeout))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return
		}
		got <- string(buf[:n])
		c.WriteToUDP(append([]byte("pong: "), buf[:n]...), from)
	}()
	return c.LocalAddr().(*net.UDPAddr).Port, got
}

func TestQEMUNet(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	kernel := BuildT(t, "net")

	t.Run("dhcp+udp", func(t *testing.T) {
		port, got := udpEcho(t)
		lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel,
			cmdline: fmt.Sprintf("udp=%d sport=41000", port), extra: qemuNet()})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantReadyFirst(t, lines)
		const hello = "corral-net hello from 10.0.2.15"
		wantInOrder(t, lines,
			"virtio: 00:02.0 dev 0x1041 bar 4 at 0xe0000000",
			"net: mac 52:54:00:12:34:56",
			"net: offer 10.0.2.15 from server 10.0.2.2",
			"net: lease 10.0.2.15/24 router 10.0.2.2 server 10.0.2.2 lease 86400 s",
			"net: router 10.0.2.2 is at 52:55:0a:00:02:02",
			fmt.Sprintf("net: udp reply from 10.0.2.2:%d: pong: %s", port, hello),
			"net: ok")
		if s := <-got; s != hello {
			t.Errorf("host received %q, want %q", s, hello)
		}
	})

	t.Run("dhcp-only", func(t *testing.T) {
		lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel, extra: qemuNet()})
		if want := QEMUStatus(ExitOK); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "net: lease 10.0.2.15/24 router 10.0.2.2 server 10.0.2.2 lease 86400 s", "net: ok")
		for _, l := range lines {
			if strings.HasPrefix(l, "net: router") || strings.HasPrefix(l, "net: udp") {
				t.Errorf("UDP phase ran without udp=PORT: %q", l)
			}
		}
	})

	t.Run("no-reply", func(t *testing.T) {
		// A port nobody listens on: the guest gives up after timeout=MS.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		port := c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
		lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel,
			cmdline: fmt.Sprintf("udp=%d timeout=1500", port), extra: qemuNet()})
		if want := QEMUStatus(ExitNetUDPTimeout); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "net: no UDP reply to port 40000 within 1500 ms")
	})

	t.Run("no-device", func(t *testing.T) {
		lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel})
		if want := QEMUStatus(ExitVirtioNoDevice); status != want {
			t.Errorf("qemu status %d, want %d", status, want)
		}
		wantInOrder(t, lines, "virtio: no device 0x1041 on bus 0")
	})
}

// wire is the far end of QEMU's "-netdev socket,udp=" link: every UDP
// datagram is one Ethernet frame. It plays the host side of a Corral VM's
// network: Corral's own DHCP server (configured as the VMM configures it,
// hostnet.DefaultPlan), ARP for the router address, and a UDP echo on
// the router's echoPort.
type wire struct {
	t        *testing.T
	conn     *net.UDPConn
	srv      *dhcp.Server
	n        hostnet.Plan
	echoPort uint16

	mu       sync.Mutex
	verdicts []dhcp.Verdict
	echoed   []string
}

func newWire(t *testing.T, n hostnet.Plan, echoPort uint16) *wire {
	t.Helper()
	cfg := n.DHCPConfig()
	cfg.NoRateLimit = true
	srv, err := dhcp.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	w := &wire{t: t, conn: c, srv: srv, n: n, echoPort: echoPort}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.serve()
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return w
}

func (w *wire) port() int { return w.conn.LocalAddr().(*net.UDPAddr).Port }

func (w *wire) serve() {
	buf := make([]byte, 65536)
	out := make([]byte, w.srv.ReplyBufferSize())
	for {
		n, from, err := w.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		frame := buf[:n]
		reply, v := w.srv.HandleFrame(frame, out)
		w.mu.Lock()
		w.verdicts = append(w.verdicts, v)
		w.mu.Unlock()
		if reply == nil && v == dhcp.VerdictNotDHCP {
			reply = w.answer(frame)
		}
		if reply != nil {
			w.conn.WriteToUDP(reply, from)
		}
	}
}

const (
	ethHdr   = 14
	ipHdr    = 20
	udpHdr   = 8
	typeIPv4 = 0x0800
	typeARP  = 0x0806
)

// answer replies to an ARP request for the router or a UDP datagram to its
// echoPort ("pong: " + payload); nil for anything else.
func (w *wire) answer(f []byte) []byte {
	be := binary.BigEndian
	router := w.n.Host.Addr().As4()
	if len(f) < ethHdr {
		return nil
	}
	switch be.Uint16(f[12:]) {
	case typeARP:
		a := f[ethHdr:]
		if len(a) < 28 || be.Uint16(a[6:]) != 1 || !bytes.Equal(a[24:28], router[:]) {
			return nil
		}
		r := make([]byte, ethHdr+28)
		copy(r[0:6], f[6:12])
		copy(r[6:12], w.n.HostMAC)
		be.PutUint16(r[12:], typeARP)
		ra := r[ethHdr:]
		copy(ra[0:6], a[0:6]) // htype, ptype, hlen, plen
		be.PutUint16(ra[6:], 2)
		copy(ra[8:14], w.n.HostMAC)
		copy(ra[14:18], router[:])
		copy(ra[18:24], a[8:14])
		copy(ra[24:28], a[14:18])
		return r
	case typeIPv4:
		ip := f[ethHdr:]
		if len(ip) < ipHdr+udpHdr || ip[0] != 0x45 || ip[9] != 17 || !bytes.Equal(ip[16:20], router[:]) {
			return nil
		}
		udp := ip[ipHdr:]
		ulen := int(be.Uint16(udp[4:]))
		if be.Uint16(udp[2:]) != w.echoPort || ulen < udpHdr || ulen > len(udp) {
			return nil
		}
		payload := udp[udpHdr:ulen]
		w.mu.Lock()
		w.echoed = append(w.echoed, string(payload))
		w.mu.Unlock()
		body := append([]byte("pong: "), payload...)
		r := make([]byte, ethHdr+ipHdr+udpHdr+len(body))
		copy(r[0:6], f[6:12])
		copy(r[6:12], w.n.HostMAC)
		be.PutUint16(r[12:], typeIPv4)
		rip := r[ethHdr:]
		rip[0], rip[8], rip[9] = 0x45, 64, 17
		be.PutUint16(rip[2:], uint16(ipHdr+udpHdr+len(body)))
		copy(rip[12:16], router[:])
		copy(rip[16:20], ip[12:16])
		be.PutUint16(rip[10:], ipChecksum(rip[:ipHdr]))
		rudp := rip[ipHdr:]
		be.PutUint16(rudp[0:], w.echoPort)
		copy(rudp[2:4], udp[0:2])
		be.PutUint16(rudp[4:], uint16(udpHdr+len(body)))
		copy(rudp[udpHdr:], body)
		return r
	}
	return nil
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// TestQEMUNetCorralDHCP runs the net guest against Corral's own DHCP server
// (dhcp.Server with the configuration the VMM gives a VM's network) over
// QEMU's socket netdev, so the guest and the server are proved against each
// other before the VMM wires virtio-net.
func TestQEMUNetCorralDHCP(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	kernel := BuildT(t, "net")
	n, err := hostnet.DefaultPlan(7, "qemu-test")
	if err != nil {
		t.Fatal(err)
	}
	const echoPort = 7777
	w := newWire(t, n, echoPort)
	// QEMU's own end: a free loopback port (closed just before QEMU binds it).
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	qport := c.LocalAddr().(*net.UDPAddr).Port
	c.Close()
	extra := []string{
		"-netdev", fmt.Sprintf("socket,id=n0,udp=127.0.0.1:%d,localaddr=127.0.0.1:%d", w.port(), qport),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,disable-legacy=on,mac=%s", n.GuestMAC),
	}
	lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel,
		cmdline: fmt.Sprintf("udp=%d", echoPort), extra: extra})
	if want := QEMUStatus(ExitOK); status != want {
		t.Errorf("qemu status %d, want %d", status, want)
	}
	hello := "corral-net hello from " + n.Guest.String()
	wantInOrder(t, lines,
		"net: mac "+n.GuestMAC.String(),
		fmt.Sprintf("net: offer %s from server %s", n.Guest, n.Host.Addr()),
		fmt.Sprintf("net: lease %s/24 router %s server %s lease %d s", n.Guest, n.Host.Addr(), n.Host.Addr(),
			int(dhcp.DefaultLeaseTime/time.Second)),
		fmt.Sprintf("net: router %s is at %s", n.Host.Addr(), n.HostMAC),
		fmt.Sprintf("net: udp reply from %s:%d: pong: %s", n.Host.Addr(), echoPort, hello),
		"net: ok")
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.echoed) != 1 || w.echoed[0] != hello {
		t.Errorf("echo port got %q, want one %q", w.echoed, hello)
	}
	var offers, acks int
	for _, v := range w.verdicts {
		switch v {
		case dhcp.VerdictOffer:
			offers++
		case dhcp.VerdictAck:
			acks++
		default:
			if v.IsDrop() {
				t.Errorf("DHCP server dropped a guest frame: %v", v)
			}
		}
	}
	if offers != 1 || acks != 1 {
		t.Errorf("server answered %d DISCOVERs and %d REQUESTs, want 1 and 1 (verdicts %v)", offers, acks, w.verdicts)
	}
}
