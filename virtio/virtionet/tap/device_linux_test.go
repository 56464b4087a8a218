package tap

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/corral-vmm/corral/dhcp"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

const (
	e2eMem   = 8 << 20
	e2eWait  = 10 * time.Second
	rxBufLen = 65562 // Linux's big-packet buffer: header plus 64 KiB frame
)

type chanIRQ chan int

func (c chanIRQ) Signal(q int) error {
	select {
	case c <- q:
	default:
	}
	return nil
}

// guest is a mock virtio-net driver on a device whose backend is a real TAP.
type guest struct {
	t        testing.TB
	dev      *virtionet.Device
	mem      *guestmem.Memory
	rx, tx   *testdriver.Driver
	irq      chanIRQ
	bufs     map[uint16]uint64
	features uint64
	timer    *time.Timer // reused bound on waits, so benchmarks do not allocate one per batch
}

func newGuest(t testing.TB, dev *virtionet.Device, features uint64) *guest {
	t.Helper()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: e2eMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	// This driver posts one receive chain per frame and has no control
	// queue: it accepts neither MRG_RXBUF nor the control features, and
	// leaves the control queue (the device's third) disabled.
	features &^= virtionet.FMrgRxbuf | virtionet.FCtrlVQ | virtionet.FCtrlRx | virtionet.FCtrlVLAN |
		virtionet.FCtrlMACAddr | virtionet.FCtrlGuestOffloads
	g := &guest{t: t, dev: dev, mem: mem, irq: make(chanIRQ, 16), bufs: map[uint16]uint64{}, features: features, timer: time.NewTimer(e2eWait)}
	g.rx = testdriver.New(mem, 64, 0x1000, e2eMem/2, 0)
	g.tx = testdriver.New(mem, 64, e2eMem/2, e2eMem, 0)
	var qs []*queue.Queue
	for _, d := range []*testdriver.Driver{g.rx, g.tx} {
		d.EventIdx = true
		q, err := queue.New(mem, d.L, virtio.QueueOptions(features, 64))
		if err != nil {
			t.Fatal(err)
		}
		qs = append(qs, q)
	}
	qs = append(qs, nil) // the control queue, not enabled
	err = dev.Activate(context.Background(), virtio.Activation{Mem: mem, Features: features, Queues: qs, Interrupt: g.irq,
		Fail: func(err error) { t.Errorf("device failed: %v", err) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Reset() })
	for range 16 {
		g.post(0)
	}
	dev.Notify(virtionet.RxQueue)
	return g
}

// post makes a receive buffer available: at a, or fresh from the heap when
// a is 0.
func (g *guest) post(a uint64) {
	if a == 0 {
		a = g.rx.Alloc(rxBufLen, 16)
	}
	head, ok := g.rx.Add(testdriver.Seg{Addr: a, Len: rxBufLen, Write: true})
	if !ok {
		g.t.Fatal("receive ring full")
	}
	g.bufs[head] = a
}

// recv returns the next received frame that match accepts (others, such as
// the host's IPv6 router solicitations, are skipped), with its header.
func (g *guest) recv(match func(frame []byte) bool) (hdr, frame []byte) {
	g.t.Helper()
	deadline := time.After(e2eWait)
	for {
		id, n, ok := g.rx.Used()
		if ok {
			a := g.bufs[uint16(id)]
			delete(g.bufs, uint16(id))
			b, err := g.mem.Slice(a, uint64(n))
			if err != nil {
				g.t.Fatal(err)
			}
			b = append([]byte(nil), b...)
			g.post(a) // give the buffer back

			g.dev.Notify(virtionet.RxQueue)
			if match(b[virtionet.HeaderLen:]) {
				return b[:virtionet.HeaderLen], b[virtionet.HeaderLen:]
			}
			continue
		}
		// Ask for an interrupt, then look again before sleeping.
		g.rx.EnableInterrupts()
		if g.rx.UsedIdx() != g.usedEvent() {
			continue
		}
		select {
		case <-g.irq:
		case <-deadline:
			g.t.Fatalf("no matching frame within %v", e2eWait)
		}
	}
}

// usedEvent reads used_event: after EnableInterrupts, the used idx the
// driver has consumed up to.
func (g *guest) usedEvent() uint16 {
	b, _ := g.mem.Slice(g.rx.L.Avail+4+2*uint64(g.rx.L.Size), 2)
	return binary.LittleEndian.Uint16(b)
}

// send transmits one frame with header hdr.
func (g *guest) send(hdr, frame []byte) {
	g.t.Helper()
	a := g.tx.Alloc(uint64(len(hdr)+len(frame)), 16)
	g.mem.WriteAt(hdr, a)
	g.mem.WriteAt(frame, a+uint64(len(hdr)))
	if _, ok := g.tx.Add(testdriver.Seg{Addr: a, Len: uint32(len(hdr))}, testdriver.Seg{Addr: a + uint64(len(hdr)), Len: uint32(len(frame))}); !ok {
		g.t.Fatal("transmit ring full")
	}
	g.dev.Notify(virtionet.TxQueue)
	deadline := time.After(e2eWait)
	for {
		if _, _, ok := g.tx.Used(); ok {
			return
		}
		g.tx.EnableInterrupts()
		if _, _, ok := g.tx.Used(); ok {
			return
		}
		select {
		case <-g.irq:
		case <-deadline:
			g.t.Fatal("transmit not completed")
		}
	}
}

func etherType(f []byte) uint16 { return binary.BigEndian.Uint16(f[12:]) }

// udp builds Ethernet/IPv4/UDP from the guest. partial leaves the UDP
// checksum as the pseudo-header sum (NEEDS_CSUM); otherwise it is complete.
func udp(src, dst net.HardwareAddr, sip, dip net.IP, sport, dport uint16, payload []byte, partial bool) []byte {
	ul := 8 + len(payload)
	f := make([]byte, 14+20+ul)
	copy(f[0:], dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+ul))
	copy(ip[12:], sip.To4())
	copy(ip[16:], dip.To4())
	binary.BigEndian.PutUint16(ip[10:], ^csum(ip[:20], 0))
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], uint16(ul))
	copy(u[8:], payload)
	var ph [12]byte
	copy(ph[0:], sip.To4())
	copy(ph[4:], dip.To4())
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:], uint16(ul))
	pseudo := csum(ph[:], 0)
	if partial {
		binary.BigEndian.PutUint16(u[6:], pseudo)
	} else {
		binary.BigEndian.PutUint16(u[6:], ^csum(u, uint32(pseudo)))
	}
	return f
}

func csum(b []byte, acc uint32) uint16 {
	for ; len(b) >= 2; b = b[2:] {
		acc += uint32(binary.BigEndian.Uint16(b))
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

func tapRxPackets(t *testing.T, h *netlink.Handle, name string) uint64 {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}

// The device on a real TAP in a fresh namespace, with the DHCP server on
// the wire: DHCP is answered in the guest and never reaches the host; ARP
// and UDP go both ways, with and without checksum offload.
func TestDeviceOnTap(t *testing.T) {
	for _, offload := range []bool{true, false} {
		name := "offloads"
		if !offload {
			name = "no-offloads"
		}
		t.Run(name, func(t *testing.T) {
			inNetns(t, func(netns.NsHandle) { deviceOnTap(t, offload) })
		})
	}
}

func deviceOnTap(t *testing.T, offload bool) {
	h := nlHandle(t)
	n := testPlan(t)
	tp, err := Open(Config{Name: testTapName, Address: n.Host, MAC: n.HostMAC, MTU: n.MTU})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dhcp.New(n.DHCPConfig())
	if err != nil {
		t.Fatal(err)
	}
	dev, err := virtionet.New(virtionet.Config{Backend: tp, MAC: n.GuestMAC, MTU: tp.MTU(), Handler: srv})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := dev.Close(); err != nil {
			t.Error(err)
		}
		waitGone(t, h, testTapName)
	}()
	features := dev.Features()
	if features&virtionet.FGuestTSO4 == 0 {
		t.Fatalf("features %#x: TAP offloads not offered", features)
	}
	if !offload {
		features &^= virtionet.FCsum | virtionet.FGuestCsum | virtionet.FHostTSO4 | virtionet.FHostTSO6 | virtionet.FGuestTSO4 | virtionet.FGuestTSO6 | virtionet.FHostECN | virtionet.FGuestECN
	}
	g := newGuest(t, dev, features)
	hostIP, guestIP := net.IP(n.Host.Addr().AsSlice()), net.IP(n.Guest.AsSlice())
	zero := make([]byte, virtionet.HeaderLen)

	// DHCP: the OFFER arrives, the DISCOVER never reaches the host.
	before := tapRxPackets(t, h, testTapName)
	m, _ := dhcpv4.NewDiscovery(n.GuestMAC, dhcpv4.WithBroadcast(true))
	g.send(zero, udp(n.GuestMAC, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, net.IPv4zero, net.IPv4bcast, 68, 67, m.ToBytes(), false))
	_, f := g.recv(func(f []byte) bool {
		return etherType(f) == 0x0800 && len(f) > 42 && binary.BigEndian.Uint16(f[36:]) == 68
	})
	offer, err := dhcpv4.FromBytes(f[42:])
	if err != nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(guestIP) {
		t.Fatalf("offer %v, %v", offer, err)
	}
	if got := tapRxPackets(t, h, testTapName); got != before {
		t.Fatalf("the DISCOVER reached the host (TAP rx_packets %d → %d)", before, got)
	}

	// ARP: the host answers for its address.
	arp := make([]byte, 42)
	copy(arp[0:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(arp[6:], n.GuestMAC)
	copy(arp[12:], []byte{0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1})
	copy(arp[22:], n.GuestMAC)
	copy(arp[28:], guestIP.To4())
	copy(arp[38:], hostIP.To4())
	g.send(zero, arp)
	_, f = g.recv(func(f []byte) bool { return etherType(f) == 0x0806 })
	if binary.BigEndian.Uint16(f[20:]) != 2 || !bytes.Equal(f[22:28], n.HostMAC) || !bytes.Equal(f[28:32], hostIP.To4()) {
		t.Fatalf("not an ARP reply from the host: % x", f)
	}
	if got := tapRxPackets(t, h, testTapName); got != before+1 {
		t.Fatalf("TAP rx_packets %d, want %d", got, before+1)
	}

	// Host → guest UDP. With GUEST_CSUM the host may leave the checksum
	// partial; without it the frame must carry a complete one.
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: hostIP, Port: 5000})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	payload := bytes.Repeat([]byte("corral"), 200)
	if _, err := pc.WriteToUDP(payload, &net.UDPAddr{IP: guestIP, Port: 6000}); err != nil {
		t.Fatal(err)
	}
	hdr, f := g.recv(func(f []byte) bool {
		return etherType(f) == 0x0800 && len(f) > 42 && binary.BigEndian.Uint16(f[36:]) == 6000
	})
	if !bytes.Equal(f[42:], payload) {
		t.Fatal("payload differs")
	}
	var ph [12]byte
	copy(ph[0:], f[26:34])
	ph[9] = 17
	binary.BigEndian.PutUint16(ph[10:], uint16(8+len(payload)))
	sum := csum(f[34:], uint32(csum(ph[:], 0)))
	switch {
	case hdr[0]&virtionet.HdrFNeedsCsum != 0:
		if !offload {
			t.Fatal("NEEDS_CSUM given to a guest without GUEST_CSUM")
		}
	case sum != 0xffff:
		t.Fatalf("UDP checksum wrong (sum %#x, header flags %#x)", sum, hdr[0])
	}
	if !offload && hdr[0] != 0 {
		t.Fatalf("header flags %#x without GUEST_CSUM", hdr[0])
	}

	// Guest → host UDP with a partial checksum: offloaded to the TAP with
	// CSUM, completed by the device without. A wrong checksum would be
	// dropped by the host's UDP.
	msg := []byte("hello from the guest")
	frame := udp(n.GuestMAC, n.HostMAC, guestIP, hostIP, 6000, 5000, msg, true)
	vh := make([]byte, virtionet.HeaderLen)
	vh[0] = virtionet.HdrFNeedsCsum
	binary.LittleEndian.PutUint16(vh[6:], 34)
	binary.LittleEndian.PutUint16(vh[8:], 6)
	g.send(vh, frame)
	pc.SetReadDeadline(time.Now().Add(e2eWait))
	buf := make([]byte, 100)
	nr, from, err := pc.ReadFromUDP(buf)
	if err != nil || !bytes.Equal(buf[:nr], msg) || !from.IP.Equal(guestIP) {
		t.Fatalf("host got %q from %v: %v", buf[:nr], from, err)
	}
	c := dev.Counters()
	if (c.TxCsumCompleted != 0) == offload {
		t.Fatalf("counters %+v: software checksums only without CSUM", c)
	}
	if c.HandlerConsumed != 1 || c.HandlerReplies != 1 || c.TxDropBackend != 0 {
		t.Fatalf("counters %+v", c)
	}
	t.Logf("host→guest UDP header flags %#x; counters %+v", hdr[0], c)
}
