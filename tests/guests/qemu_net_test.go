package guests

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
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
