package tap

import (
	"fmt"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

// BenchmarkTap measures frames through the running device (its goroutines,
// woken by Notify, signalling the mock driver by interrupt) and a real TAP
// in a fresh network namespace, in batches of 32. tx: the guest sends UDP
// datagrams to a host socket that never reads (the host's UDP drops them
// at the full socket, after the whole receive path). rx: a host UDP socket
// sends datagrams to the guest's address; the guest takes each and posts
// the buffer again. Host system calls are part of the figures.
func BenchmarkTap(b *testing.B) {
	for _, dir := range []string{"tx", "rx"} {
		for _, n := range []int{64, 1500} {
			b.Run(fmt.Sprintf("%s-%d", dir, n), func(b *testing.B) {
				inNetns(b, func(netns.NsHandle) { benchTap(b, dir == "rx", n) })
			})
		}
	}
}

func benchTap(b *testing.B, rx bool, frameLen int) {
	const batch = 32
	n := testPlan(b)
	tp, err := Open(Config{Name: testTapName, Address: n.Host, MAC: n.HostMAC})
	if err != nil {
		b.Fatal(err)
	}
	dev, err := virtionet.New(virtionet.Config{Backend: tp, MAC: n.GuestMAC, MTU: tp.MTU()})
	if err != nil {
		tp.Close()
		b.Fatal(err)
	}
	defer dev.Close()
	g := newGuest(b, dev, dev.Features())
	hostIP, guestIP := net.IP(n.Host.Addr().AsSlice()), net.IP(n.Guest.AsSlice())
	payload := make([]byte, frameLen-42)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: hostIP, Port: 9})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	sink.SetReadBuffer(4096)

	var round func()
	if rx {
		link, _ := netlink.LinkByName(testTapName)
		if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, State: netlink.NUD_PERMANENT,
			IP: guestIP, HardwareAddr: n.GuestMAC, Family: netlink.FAMILY_V4}); err != nil {
			b.Fatal(err)
		}
		conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: hostIP}, &net.UDPAddr{IP: guestIP, Port: 9})
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		round = func() {
			for range batch {
				if _, err := conn.Write(payload); err != nil {
					b.Fatal(err)
				}
			}
			for got := 0; got < batch; {
				got += g.takeAll(func(f []byte) bool { return len(f) == frameLen })
			}
		}
	} else {
		frame := udp(n.GuestMAC, n.HostMAC, guestIP, hostIP, 9999, 9, payload, false)
		addrs := make([]uint64, batch)
		for i := range addrs {
			addrs[i] = g.tx.Alloc(uint64(virtionet.HeaderLen+len(frame)), 64)
			g.mem.WriteAt(make([]byte, virtionet.HeaderLen), addrs[i])
			g.mem.WriteAt(frame, addrs[i]+virtionet.HeaderLen)
		}
		round = func() {
			for _, a := range addrs {
				g.tx.Add(testdriver.Seg{Addr: a, Len: virtionet.HeaderLen}, testdriver.Seg{Addr: a + virtionet.HeaderLen, Len: uint32(len(frame))})
			}
			g.dev.Notify(virtionet.TxQueue)
			g.timer.Reset(e2eWait)
			for got := 0; got < batch; {
				if _, _, ok := g.tx.Used(); ok {
					got++
					continue
				}
				g.tx.EnableInterrupts()
				if _, _, ok := g.tx.Used(); ok {
					got++
					continue
				}
				select {
				case <-g.irq:
				case <-g.timer.C:
					b.Fatal("transmit not completed")
				}
			}
		}
	}
	round()
	b.SetBytes(int64(frameLen))
	b.ReportAllocs()
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		round()
	}
	b.StopTimer()
	frames := (b.N + batch - 1) / batch * batch
	b.ReportMetric(float64(frames)/b.Elapsed().Seconds(), "pkt/s")
	c := dev.Counters()
	if c.RxDropGuestBuffer+c.RxDropOversize+c.TxDropBackend != 0 {
		b.Fatalf("drops: %+v", c)
	}
}

// takeAll takes every received frame now in the used ring (waiting for at
// least one), gives the buffers back, and returns how many matched.
func (g *guest) takeAll(match func(frame []byte) bool) int {
	g.timer.Reset(e2eWait)
	got := 0
	for {
		id, l, ok := g.rx.Used()
		if ok {
			a := g.bufs[uint16(id)]
			delete(g.bufs, uint16(id))
			if f, err := g.mem.Slice(a+virtionet.HeaderLen, uint64(l)-virtionet.HeaderLen); err == nil && match(f) {
				got++
			}
			g.post(a)
			continue
		}
		if got > 0 {
			g.dev.Notify(virtionet.RxQueue)
			return got
		}
		g.rx.EnableInterrupts()
		if g.rx.UsedIdx() != g.usedEvent() {
			continue
		}
		select {
		case <-g.irq:
		case <-g.timer.C:
			g.t.Fatal("nothing received")
		}
	}
}
