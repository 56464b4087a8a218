package dhcp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/internal/testenv"
)

// TestRealClient runs busybox udhcpc, a DHCP client nobody here wrote, in a
// network namespace. Its veth peer lives in a second namespace where an
// AF_PACKET socket feeds every frame to HandleFrame and writes the replies
// back, as virtio-net will. The client obtains a lease, renews it (unicast,
// through the kernel's UDP stack), and releases it. Addresses are from
// 192.0.2.0/24 (TEST-NET-1) and never leave the two namespaces.
func TestRealClient(t *testing.T) {
	testenv.MustHaveRoot(t)
	ipCmd := testenv.MustHaveCommand(t, "ip", "iproute2")
	busybox := testenv.MustHaveCommand(t, "busybox", "busybox-static")
	if out, err := exec.Command(busybox, "udhcpc", "--help").CombinedOutput(); !bytes.Contains(out, []byte("udhcpc")) {
		testenv.Missing(t, testenv.Tools, "busybox has no udhcpc applet (apt-get install -y busybox-static): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	tag := fmt.Sprintf("%d", os.Getpid()%100000)
	srvNS, cliNS := "corral-dhcp-s"+tag, "corral-dhcp-c"+tag
	srvIf, cliIf := "cds"+tag, "cdc"+tag
	clientMAC := net.HardwareAddr{0x52, 0x54, 0x00, 0xc0, 0xff, 0xee}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.CommandContext(ctx, ipCmd, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", srvNS)
	t.Cleanup(func() { exec.Command(ipCmd, "netns", "del", srvNS).Run() })
	run("netns", "add", cliNS)
	t.Cleanup(func() { exec.Command(ipCmd, "netns", "del", cliNS).Run() })
	run("-n", srvNS, "link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", cliNS)
	run("-n", cliNS, "link", "set", cliIf, "address", clientMAC.String())
	run("-n", srvNS, "link", "set", srvIf, "up")
	run("-n", cliNS, "link", "set", cliIf, "up")
	run("-n", cliNS, "link", "set", "lo", "up")
	// The server answers DHCP only, not ARP: give the client its MAC.
	run("-n", cliNS, "neigh", "replace", "192.0.2.1", "lladdr", srvMAC.String(), "dev", cliIf, "nud", "permanent")

	s, err := New(Config{
		Server:      netip.MustParsePrefix("192.0.2.1/24"),
		ServerMAC:   srvMAC,
		PoolFirst:   netip.MustParseAddr("192.0.2.100"),
		PoolLast:    netip.MustParseAddr("192.0.2.150"),
		Router:      netip.MustParseAddr("192.0.2.1"),
		DNS:         []netip.Addr{netip.MustParseAddr("192.0.2.53")},
		Domain:      "corral.test",
		LeaseTime:   time.Hour,
		AllowedMACs: []net.HardwareAddr{clientMAC},
		Routes:      []Route{{Dest: netip.MustParsePrefix("198.51.100.0/24"), Gateway: netip.MustParseAddr("192.0.2.1")}},
	})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := packetSocket(srvNS, srvIf)
	if err != nil {
		t.Fatalf("AF_PACKET socket in %s: %v", srvNS, err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		serveFrames(ctx, t, s, fd)
	}()
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		unix.Close(fd)
	})

	dir := t.TempDir()
	events := filepath.Join(dir, "events")
	script := filepath.Join(dir, "script")
	// udhcpc runs this on every state change; it configures the interface
	// so that renew and release go through the kernel's UDP socket.
	if err := os.WriteFile(script, []byte(`#!/bin/sh
echo "$1 ip=$ip subnet=$subnet router=$router dns=$dns domain=$domain lease=$lease serverid=$serverid staticroutes=$staticroutes" >> `+events+`
case "$1" in
bound|renew) `+ipCmd+` addr replace "$ip/$subnet" dev "$interface" ;;
deconfig) `+ipCmd+` addr flush dev "$interface" ;;
esac
exit 0
`), 0o755); err != nil {
		t.Fatal(err)
	}
	var clientOut bytes.Buffer
	cmd := exec.CommandContext(ctx, ipCmd, "netns", "exec", cliNS, busybox, "udhcpc",
		"-f", "-i", cliIf, "-s", script, "-t", "5", "-T", "2", "-O", "staticroutes")
	cmd.Stdout, cmd.Stderr = &clientOut, &clientOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("udhcpc output:\n%s", clientOut.String())
			ev, _ := os.ReadFile(events)
			t.Logf("script events:\n%s", ev)
			t.Logf("server counters: %v", nonZero(s.Counters().Map()))
		}
	}()

	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for !ok() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	eventLine := func(prefix string) string {
		b, _ := os.ReadFile(events)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, prefix+" ") {
				return l
			}
		}
		return ""
	}

	// 1. Obtain.
	waitFor("bound", func() bool { return eventLine("bound") != "" })
	bound := eventLine("bound")
	for _, want := range []string{"ip=192.0.2.100 ", "subnet=255.255.255.0 ", "router=192.0.2.1 ", "dns=192.0.2.53 ",
		"domain=corral.test ", "lease=3600 ", "serverid=192.0.2.1 ", "staticroutes=0.0.0.0/0 192.0.2.1 198.51.100.0/24 192.0.2.1"} {
		if !strings.Contains(bound, want) {
			t.Errorf("bound event lacks %q: %s", want, bound)
		}
	}
	if l := s.Leases(); len(l) != 1 || l[0].State != "bound" || l[0].IP.String() != "192.0.2.100" {
		t.Fatalf("server leases after bind: %+v", l)
	}

	// 2. Renew: SIGUSR1 makes udhcpc unicast a REQUEST from 192.0.2.100.
	if err := cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor("renew", func() bool { return eventLine("renew") != "" })
	if c := s.Counters(); c.RequestRenewing != 1 || c.Ack < 2 {
		t.Errorf("after renew: request_renewing %d, ack %d", c.RequestRenewing, c.Ack)
	}

	// 3. Release: SIGUSR2 makes udhcpc send a RELEASE and deconfigure.
	if err := cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	waitFor("release", func() bool { return s.Counters().Release == 1 })
	if l := s.Leases(); len(l) != 1 || l[0].State != "released" {
		t.Errorf("server leases after release: %+v", l)
	}
	c := s.Counters()
	t.Logf("counters: %v", nonZero(c.Map()))
	if c.Offer < 1 || c.RequestSelecting < 1 || c.RxRelease != 1 || c.DropUDPChecksum != 0 {
		t.Errorf("counters: %v", nonZero(c.Map()))
	}
}

func nonZero(m map[string]uint64) map[string]uint64 {
	for k, v := range m {
		if v == 0 {
			delete(m, k)
		}
	}
	return m
}

// packetSocket opens an AF_PACKET socket bound to ifname inside netns ns.
// The work happens on a locked OS thread that is discarded afterwards, so
// no other goroutine ever runs in the other namespace.
func packetSocket(ns, ifname string) (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		fd, err := func() (int, error) {
			nsf, err := os.Open(filepath.Join("/run/netns", ns))
			if err != nil {
				return -1, err
			}
			defer nsf.Close()
			if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
				return -1, fmt.Errorf("setns: %w", err)
			}
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return -1, err
			}
			proto := int(htons(unix.ETH_P_ALL))
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
			if err != nil {
				return -1, err
			}
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
				unix.Close(fd)
				return -1, err
			}
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
				unix.Close(fd)
				return -1, err
			}
			tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// serveFrames is the stand-in for virtio-net: frames from the guest side go
// to HandleFrame, replies go back out on the same interface.
func serveFrames(ctx context.Context, t *testing.T, s *Server, fd int) {
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	out := make([]byte, s.ReplyBufferSize())
	for ctx.Err() == nil {
		n, oobn, _, from, err := unix.Recvmsg(fd, buf, oob, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Errorf("recvmsg: %v", err)
			return
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue // our own replies
		}
		frame := buf[:n]
		if csumNotReady(oob[:oobn]) {
			// The sending kernel left the UDP checksum to "hardware", as a
			// guest with VIRTIO_NET_F_CSUM does; virtio-net completes it.
			completeUDPChecksum(frame)
		}
		reply, _ := s.HandleFrame(frame, out)
		if reply == nil {
			continue
		}
		if err := unix.Sendto(fd, reply, 0, &unix.SockaddrLinklayer{Ifindex: ll.Ifindex, Halen: 6}); err != nil {
			t.Errorf("sendto: %v", err)
			return
		}
	}
}

func csumNotReady(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 4 {
			return binary.NativeEndian.Uint32(m.Data)&unix.TP_STATUS_CSUMNOTREADY != 0
		}
	}
	return false
}

// completeUDPChecksum fills in the UDP checksum of an untagged IPv4 frame.
func completeUDPChecksum(b []byte) {
	if len(b) < 34 || b[12] != 0x08 || b[13] != 0 || b[23] != ipProtoUDP {
		return
	}
	ihl := int(b[14]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[16:]))
	if ihl < 20 || total < ihl+8 || 14+total > len(b) {
		return
	}
	udp := b[14+ihl : 14+total]
	if ulen := int(binary.BigEndian.Uint16(udp[4:])); ulen >= 8 && ulen <= len(udp) {
		udp = udp[:ulen] // the checksum covers exactly the UDP length
	}
	binary.BigEndian.PutUint16(udp[6:], 0)
	cs := naiveChecksum(b[26:34], []byte{0, 17, byte(len(udp) >> 8), byte(len(udp))}, udp)
	if cs == 0 {
		cs = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], cs)
}
