package tap

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

var mqGuestMAC = net.HardwareAddr{0x02, 'c', 'r', 0, 7, 2}

// sendFlows sends n UDP datagrams to port 9 of 10.200.7.2, each from a
// socket of its own (so a flow of its own), and returns how many of them
// each queue of tp got.
func sendFlows(t *testing.T, tp *Tap, n int) []int {
	t.Helper()
	for range n {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IP{10, 200, 7, 2}, Port: 9})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("flow")); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	got := make([]int, tp.NumQueues())
	buf := make([]byte, virtionet.HeaderLen+virtionet.MaxFrameLen)
	deadline := time.Now().Add(10 * time.Second)
	for total := 0; total < n; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d datagrams reached the queues (%v)", total, n, got)
		}
		idle := true
		for i := range got {
			k, err := tp.Queue(i).ReadFrame(buf, false)
			if errors.Is(err, virtionet.ErrWouldBlock) {
				continue
			}
			if err != nil {
				t.Fatalf("queue %d: %v", i, err)
			}
			idle = false
			f := buf[virtionet.HeaderLen:k]
			// IPv4, UDP, to port 9; the rest (IPv6 solicitations) is noise.
			if len(f) >= 14+20+8 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[14+9] == 17 &&
				binary.BigEndian.Uint16(f[14+20+2:]) == 9 {
				got[i]++
				total++
			}
		}
		if idle {
			time.Sleep(time.Millisecond)
		}
	}
	return got
}

// A created multi-queue TAP has one descriptor per queue; the kernel
// spreads the host's flows over the attached queues, a detached queue gets
// none, every queue can send, and the TAP goes with the last descriptor.
func TestMultiQueueCreated(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		tp, err := Open(Config{Name: "corralmq", Address: netip.MustParsePrefix("10.200.7.1/24"), Queues: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer tp.Close()
		link, err := h.LinkByName("corralmq")
		if err != nil {
			t.Fatal(err)
		}
		if tt, ok := link.(*netlink.Tuntap); !ok || tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 || tp.NumQueues() != 2 {
			t.Fatalf("link %+v, %d queues: want a multi-queue TAP with 2", link, tp.NumQueues())
		}
		if err := h.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.IP{10, 200, 7, 2}, HardwareAddr: mqGuestMAC}); err != nil {
			t.Fatal(err)
		}
		// 64 flows over 2 queues: all on one has odds of 2^-63.
		if got := sendFlows(t, tp, 64); got[0] == 0 || got[1] == 0 {
			t.Fatalf("flows per queue %v: want both queues used", got)
		}
		if err := tp.SetQueueEnabled(1, false); err != nil {
			t.Fatal(err)
		}
		if got := sendFlows(t, tp, 32); got[1] != 0 {
			t.Fatalf("flows per queue %v with queue 1 detached", got)
		}
		if err := tp.SetQueueEnabled(1, true); err != nil {
			t.Fatal(err)
		}
		if err := tp.SetQueueEnabled(2, true); err == nil {
			t.Fatal("queue 2 of 2 enabled")
		}
		// Queue 1 sends: a datagram from the guest's address to the host.
		srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP{10, 200, 7, 1}, Port: 7000})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		frame := udpFrameTo(mqGuestMAC, tp.MAC(), [4]byte{10, 200, 7, 2}, [4]byte{10, 200, 7, 1}, 7000, []byte("from queue 1"))
		if err := tp.Queue(1).WriteFrame(append(make([]byte, virtionet.HeaderLen), frame...)); err != nil {
			t.Fatal(err)
		}
		srv.SetReadDeadline(time.Now().Add(10 * time.Second))
		b := make([]byte, 64)
		n, _, err := srv.ReadFromUDP(b)
		if err != nil || string(b[:n]) != "from queue 1" {
			t.Fatalf("host read %q, %v", b[:n], err)
		}
		if err := tp.SetOffload(virtionet.OffloadCsum); err != nil {
			t.Fatal(err)
		}
		tp.Close()
		waitGone(t, h, "corralmq")
	})
}

// An existing multi-queue TAP is attached with the queues asked for; an
// existing single-queue TAP takes one, and more is ErrSingleQueue.
func TestMultiQueueExisting(t *testing.T) {
	inNetns(t, func(netns.NsHandle) {
		h := nlHandle(t)
		for _, l := range []*netlink.Tuntap{
			{LinkAttrs: netlink.LinkAttrs{Name: "usermq"}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_MULTI_QUEUE_DEFAULTS | netlink.TUNTAP_VNET_HDR},
			{LinkAttrs: netlink.LinkAttrs{Name: "usersq"}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE},
		} {
			if err := h.LinkAdd(l); err != nil {
				t.Fatal(err)
			}
			for _, f := range l.Fds {
				f.Close()
			}
		}
		tp, err := Open(Config{Name: "usermq", Queues: 3})
		if err != nil {
			t.Fatal(err)
		}
		if tp.Created() || tp.NumQueues() != 3 {
			t.Fatalf("created %v, %d queues", tp.Created(), tp.NumQueues())
		}
		if err := tp.SetQueueEnabled(2, false); err != nil {
			t.Fatal(err)
		}
		tp.Close()
		one, err := Open(Config{Name: "usermq"})
		if err != nil {
			t.Fatalf("one queue of a multi-queue TAP: %v", err)
		}
		one.Close()
		if _, err := h.LinkByName("usermq"); err != nil {
			t.Fatal("Close deleted a TAP Corral did not create")
		}

		_, err = Open(Config{Name: "usersq", Queues: 2})
		if !errors.Is(err, ErrSingleQueue) || !strings.Contains(err.Error(), "usersq") {
			t.Fatalf("2 queues of a single-queue TAP: %v, want ErrSingleQueue", err)
		}
		sq, err := Open(Config{Name: "usersq", Queues: 1})
		if err != nil {
			t.Fatal(err)
		}
		if sq.NumQueues() != 1 {
			t.Fatalf("%d queues", sq.NumQueues())
		}
		sq.Close()
		if _, err := Open(Config{Queues: virtionet.MaxQueuePairs + 1}); err == nil {
			t.Fatal("more queues than MaxQueuePairs opened")
		}
	})
}

// udpFrameTo builds an Ethernet/IPv4/UDP frame (UDP checksum 0: none).
func udpFrameTo(src, dst net.HardwareAddr, sip, dip [4]byte, port uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:], dst)
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	copy(ip[12:], sip[:])
	copy(ip[16:], dip[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], port)
	binary.BigEndian.PutUint16(udp[2:], port)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}
