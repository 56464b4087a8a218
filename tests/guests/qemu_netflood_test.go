package guests

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/hostnet"
)

// The net guest's throughput modes (txflood=N, rxcount=N) and static
// address (ip=, router=) under QEMU's virtio-net-pci, over the socket netdev:
// the test is the whole network, so it sees every frame the guest sends and
// chooses every frame it gets. bench/net-pps.sh uses the same modes on TAPs.

// floodLink is the far end of "-netdev socket,udp=": it answers ARP for the
// router (wire.answer), checks and counts the guest's frames, and sends
// frames to QEMU's end.
type floodLink struct {
	t    *testing.T
	conn *net.UDPConn
	peer *net.UDPAddr // QEMU's end (localaddr=)
	arp  *wire        // only its answer method: ARP for the router
	n    hostnet.Plan

	mu         sync.Mutex
	flood      map[int]int // frames to the router's port 9, by frame length
	bad        []string    // frames to port 9 that are not what the guest should build
	arpReplies int         // ARP replies from the guest for its own address
}

func newFloodLink(t *testing.T, n hostnet.Plan) *floodLink {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadBuffer(4 << 20)
	// QEMU's own end: a free loopback port (closed just before QEMU binds it).
	q, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	peer := q.LocalAddr().(*net.UDPAddr)
	q.Close()
	l := &floodLink{t: t, conn: c, peer: peer, arp: &wire{n: n}, n: n, flood: map[int]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.serve()
	}()
	t.Cleanup(func() {
		c.Close()
		<-done
	})
	return l
}

func (l *floodLink) qemuArgs() []string {
	return []string{
		"-netdev", fmt.Sprintf("socket,id=n0,udp=%s,localaddr=%s", l.conn.LocalAddr(), l.peer),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=n0,disable-legacy=on,mac=%s", l.n.GuestMAC),
	}
}

func (l *floodLink) serve() {
	buf := make([]byte, 65536)
	for {
		n, _, err := l.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		f := buf[:n]
		if r := l.arp.answer(f); r != nil {
			l.conn.WriteToUDP(r, l.peer)
			continue
		}
		l.note(f)
	}
}

// note checks a frame from the guest: a flood frame (UDP to the router's
// port 9) or an ARP reply for the guest's address.
func (l *floodLink) note(f []byte) {
	be := binary.BigEndian
	if len(f) < ethHdr+28 {
		return
	}
	guest, router := l.n.Guest.As4(), l.n.Host.Addr().As4()
	l.mu.Lock()
	defer l.mu.Unlock()
	switch be.Uint16(f[12:]) {
	case typeARP:
		a := f[ethHdr:]
		if be.Uint16(a[6:]) == 2 && bytes.Equal(a[8:14], l.n.GuestMAC) && bytes.Equal(a[14:18], guest[:]) {
			l.arpReplies++
		}
	case typeIPv4:
		ip := f[ethHdr:]
		if len(ip) < ipHdr+udpHdr || ip[9] != 17 || be.Uint16(ip[ipHdr+2:]) != 9 {
			return
		}
		var why string
		switch {
		case !bytes.Equal(f[0:6], l.n.HostMAC) || !bytes.Equal(f[6:12], l.n.GuestMAC):
			why = "MAC addresses"
		case ip[0] != 0x45 || int(be.Uint16(ip[2:])) != len(ip) || ipChecksum(ip[:ipHdr]) != 0:
			why = "IPv4 header"
		case !bytes.Equal(ip[12:16], guest[:]) || !bytes.Equal(ip[16:20], router[:]):
			why = "IP addresses"
		case be.Uint16(ip[ipHdr:]) != 40000 || int(be.Uint16(ip[ipHdr+4:])) != len(ip)-ipHdr:
			why = "UDP header"
		}
		if why != "" {
			l.bad = append(l.bad, fmt.Sprintf("%s in % x", why, f[:ethHdr+ipHdr+udpHdr]))
			return
		}
		l.flood[len(f)]++
	}
}

// udpFrame builds a frame from the router to the guest's dport of size
// bytes, its payload starting with seq.
func (l *floodLink) udpFrame(size int, dport uint16, seq uint32) []byte {
	be := binary.BigEndian
	guest, router := l.n.Guest.As4(), l.n.Host.Addr().As4()
	f := make([]byte, size)
	copy(f[0:6], l.n.GuestMAC)
	copy(f[6:12], l.n.HostMAC)
	be.PutUint16(f[12:], typeIPv4)
	ip := f[ethHdr:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	be.PutUint16(ip[2:], uint16(size-ethHdr))
	copy(ip[12:16], router[:])
	copy(ip[16:20], guest[:])
	be.PutUint16(ip[10:], ipChecksum(ip[:ipHdr]))
	udp := ip[ipHdr:]
	be.PutUint16(udp[0:], 5555)
	be.PutUint16(udp[2:], dport)
	be.PutUint16(udp[4:], uint16(size-ethHdr-ipHdr))
	be.PutUint32(udp[udpHdr:], seq)
	return f
}

// arpRequest asks who has the guest's address, from the router.
func (l *floodLink) arpRequest() []byte {
	be := binary.BigEndian
	guest, router := l.n.Guest.As4(), l.n.Host.Addr().As4()
	f := make([]byte, 60)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], l.n.HostMAC)
	be.PutUint16(f[12:], typeARP)
	a := f[ethHdr:]
	be.PutUint16(a[0:], 1)
	be.PutUint16(a[2:], typeIPv4)
	a[4], a[5] = 6, 4
	be.PutUint16(a[6:], 1)
	copy(a[8:14], l.n.HostMAC)
	copy(a[14:18], router[:])
	copy(a[24:28], guest[:])
	return f
}

// rate checks a throughput line's arithmetic: frames/s and MB/s as the
// guest computes them from frames, bytes and microseconds.
func checkRate(t *testing.T, line string, frames, bytes uint64, us, fps, mbs string) {
	t.Helper()
	u, _ := strconv.ParseUint(us, 10, 64)
	f, _ := strconv.ParseUint(fps, 10, 64)
	if u == 0 {
		t.Errorf("%q: zero microseconds", line)
		return
	}
	if want := frames * 1000000 / u; f != want {
		t.Errorf("%q: %d frames/s, want %d frames in %d us = %d", line, f, frames, u, want)
	}
	centi := bytes * 100 / u
	if want := fmt.Sprintf("%d.%02d", centi/100, centi%100); mbs != want {
		t.Errorf("%q: %s MB/s, want %d bytes in %d us = %s", line, mbs, bytes, u, want)
	}
}

func findLine(t *testing.T, lines []string, re *regexp.Regexp) []string {
	t.Helper()
	for _, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil {
			return m
		}
	}
	t.Errorf("no console line matches %v", re)
	return nil
}

func TestQEMUNetTxFlood(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	kernel := BuildT(t, "net")
	n, err := hostnet.DefaultPlan(7, "qemu-test")
	if err != nil {
		t.Fatal(err)
	}
	const frames = 40 // small: loopback UDP must not drop any
	for _, size := range []int{60, 64, 1500, 1514} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			l := newFloodLink(t, n)
			lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel, extra: l.qemuArgs(),
				cmdline: fmt.Sprintf("ip=%s router=%s txflood=%d size=%d txbatch=8", n.Guest, n.Host.Addr(), frames, size)})
			if want := QEMUStatus(ExitOK); status != want {
				t.Errorf("qemu status %d, want %d", status, want)
			}
			wantInOrder(t, lines,
				fmt.Sprintf("net: static %s/24 router %s", n.Guest, n.Host.Addr()),
				fmt.Sprintf("net: router %s is at %s", n.Host.Addr(), n.HostMAC),
				"net: ok")
			re := regexp.MustCompile(fmt.Sprintf(`^net: txflood %d frames of %d bytes to %s:9: \d+ ticks, (\d+) us, `+
				`(\d+) frames/s, (\d+\.\d\d) MB/s, \d+ kicks, idle \d+\.\d%% \(tsc \d+ kHz, (kvmclock|cpuid)\)$`,
				frames, size, regexp.QuoteMeta(n.Host.Addr().String())))
			if m := findLine(t, lines, re); m != nil {
				checkRate(t, m[0], frames, frames*uint64(size), m[1], m[2], m[3])
			}
			// The last frames may still be on their way through QEMU's socket.
			deadline := time.Now().Add(5 * time.Second)
			for {
				l.mu.Lock()
				got, bad := l.flood[size], len(l.bad)
				l.mu.Unlock()
				if got >= frames || bad > 0 || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.flood[size] != frames || len(l.flood) != 1 || len(l.bad) != 0 {
				t.Errorf("link got flood frames by length %v, want %d of %d bytes; malformed: %q", l.flood, frames, size, l.bad)
			}
		})
	}
}

func TestQEMUNetRxCount(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	kernel := BuildT(t, "net")
	n, err := hostnet.DefaultPlan(7, "qemu-test")
	if err != nil {
		t.Fatal(err)
	}
	const (
		count     = 100
		size      = 200 // counted frames
		otherSize = 90  // frames to another port: not counted, not in the bytes
	)
	l := newFloodLink(t, n)
	// Send until QEMU ends: numbered frames to port 9, and every fifth
	// slot a frame to port 10 or (every twentieth) an ARP request for the
	// guest. QEMU queues what arrives before the guest posts buffers.
	ctx, cancel := context.WithCancel(t.Context())
	sent := make(chan uint32, 1)
	go func() {
		var seq uint32
		defer func() { sent <- seq }()
		for i := 0; ctx.Err() == nil; i++ {
			var f []byte
			switch {
			case i%20 == 19:
				f = l.arpRequest()
			case i%5 == 4:
				f = l.udpFrame(otherSize, 10, 0xffffffff)
			default:
				f = l.udpFrame(size, 9, seq)
				seq++
			}
			l.conn.WriteToUDP(f, l.peer)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel, extra: l.qemuArgs(),
		cmdline: fmt.Sprintf("ip=%s router=%s rxcount=%d rxport=9 timeout=30000", n.Guest, n.Host.Addr(), count)})
	cancel()
	<-sent
	if want := QEMUStatus(ExitOK); status != want {
		t.Errorf("qemu status %d, want %d", status, want)
	}
	wantInOrder(t, lines,
		fmt.Sprintf("net: static %s/24 router %s", n.Guest, n.Host.Addr()),
		fmt.Sprintf("net: rxcount ready on %s:9", n.Guest),
		"net: ok")
	re := regexp.MustCompile(fmt.Sprintf(`^net: rxcount %d frames, (\d+) bytes: \d+ ticks, (\d+) us, (\d+) frames/s, `+
		`(\d+\.\d\d) MB/s, seq (\d+)\.\.(\d+), (\d+) other, \d+ kicks, idle \d+\.\d%% \(tsc \d+ kHz, (kvmclock|cpuid)\)$`, count))
	m := findLine(t, lines, re)
	if m == nil {
		return
	}
	const wantBytes = (count - 1) * size
	if m[1] != strconv.Itoa(wantBytes) {
		t.Errorf("%q: %s bytes, want %d (%d frames after the first, of %d bytes)", m[0], m[1], wantBytes, count-1, size)
	}
	checkRate(t, m[0], count-1, wantBytes, m[2], m[3], m[4])
	first, _ := strconv.ParseUint(m[5], 10, 32)
	last, _ := strconv.ParseUint(m[6], 10, 32)
	other, _ := strconv.ParseUint(m[7], 10, 32)
	if last < first+count-1 {
		t.Errorf("%q: seq span %d..%d holds fewer than %d frames", m[0], first, last, count)
	}
	if other == 0 {
		t.Errorf("%q: no other frames seen, though every fifth frame was one", m[0])
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.arpReplies == 0 {
		t.Error("the guest answered none of the ARP requests for its address")
	}
}

func TestQEMUNetBadArgs(t *testing.T) {
	qemu := needQEMU(t)
	needQBoot(t)
	kernel := BuildT(t, "net")
	for _, tc := range []struct{ cmdline, want string }{
		{"ip=10.0.2.300", "net: ip=10.0.2.300 is not an address A.B.C.D"},
		{"ip=10.0.2.15 router=10.0.2", "net: router=10.0.2 is not an address A.B.C.D"},
		{"ip=10.0.2.15 prefix=32", "net: prefix=32: want 1..31"},
		{"ip=10.0.2.15 txflood=5", "net: udp= and txflood= need a router (router 0.0.0.0)"},
		{"ip=10.0.2.15 router=10.0.2.2 txflood=5 size=59",
			"net: txflood=5 size=59: want N > 0, size 60..1514 and a router"},
		{"ip=10.0.2.15 size=1515 txflood=5",
			"net: udp=0 sport=40000 floodport=9 rxport=9 size=1515 txbatch=0 out of range"},
		{"ip=10.0.2.15 rxcount=1", "net: rxcount=1: want N >= 2"},
	} {
		t.Run(tc.cmdline, func(t *testing.T) {
			lines, status := runQEMU(t, qemu, qemuRun{machine: "pc", kernel: kernel, cmdline: tc.cmdline, extra: qemuNet()})
			if want := QEMUStatus(ExitBadArgs); status != want {
				t.Errorf("qemu status %d, want %d", status, want)
			}
			wantInOrder(t, lines, tc.want)
		})
	}
}
