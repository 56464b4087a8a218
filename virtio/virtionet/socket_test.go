package virtionet

import (
	"bytes"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// newSocketTestBackend hands one end of a blocking SOCK_SEQPACKET pair to
// NewSocketBackend, as a caller passing a descriptor does; the test keeps
// the other end, also blocking (its reads have deadlines only through the
// poller, so it is made pollable the same way).
func newSocketTestBackend(tb testing.TB) (*testBackend, *os.File) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	given := os.NewFile(uintptr(fds[0]), "given")
	fb, err := NewSocketBackend(given)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := given.Stat(); err == nil {
		tb.Fatal("NewSocketBackend left the given file open")
	}
	raw := os.NewFile(uintptr(fds[1]), "peer")
	nfd, err := dupNonblock(raw) // in the runtime's poller: the test reads with deadlines
	raw.Close()
	if err != nil {
		tb.Fatal(err)
	}
	peer := os.NewFile(uintptr(nfd), "peer")
	tb.Cleanup(func() { peer.Close() })
	return &testBackend{FileBackend: fb}, peer
}

// A NIC on a socket pair, as `--net fd=N` gives it: the DHCP handshake is
// answered inside the device, and other frames cross the pair both ways,
// with no TAP and no privilege.
func TestSocketBackendDHCPAndFrames(t *testing.T) {
	srv, n := testDHCP(t)
	h := newHarness(t, opts{handler: srv, socket: true})
	if h.dev.Features()&(FCsum|FGuestCsum) != 0 {
		t.Fatalf("features %#x offer offloads on a socket", h.dev.Features())
	}
	h.refill(4, smallBuf)
	f, _, _ := discover(t, csumFull)
	h.sendTx(header{}, f, 0)
	offer := parseReply(t, h.takeRx().frame)
	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	f, _, _ = udpFrame(bcastMAC, guestMAC, zeroIP, bcastIP, 68, 67, req.ToBytes(), csumFull)
	h.sendTx(header{}, f, 0)
	ack := parseReply(t, h.takeRx().frame)
	if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IP(n.Guest.AsSlice())) {
		t.Fatalf("got %v for %v, want an ACK of %v", ack.MessageType(), ack.YourIPAddr, n.Guest)
	}
	// Guest to peer: the first frame the peer sees is this one, not DHCP.
	arp := arpRequest(n.Host.Addr().As4())
	h.sendTx(header{}, arp, 0)
	if got := h.peerRead(); !bytes.Equal(got, arp) {
		t.Fatalf("peer got %d bytes, want the ARP request", len(got))
	}
	// Peer to guest, without a header on the wire.
	in := rawFrame(200, 9)
	h.peerWrite(in)
	if p := h.takeRx(); !bytes.Equal(p.frame, in) || p.hdr != (header{}) {
		t.Fatalf("guest got %d bytes, header %+v", len(p.frame), p.hdr)
	}
	if c := h.dev.Counters(); c.HandlerConsumed != 2 || c.HandlerReplies != 2 {
		t.Fatalf("counters %+v", c)
	}
}

// Sockets without frame boundaries and non-sockets are refused, leaving the
// caller's file open; a datagram socket is accepted.
func TestNewSocketBackendTypes(t *testing.T) {
	for _, c := range []struct {
		typ  int
		want string
	}{{unix.SOCK_STREAM, "not SOCK_SEQPACKET or SOCK_DGRAM"}, {unix.SOCK_DGRAM, ""}} {
		fds, err := unix.Socketpair(unix.AF_UNIX, c.typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f, other := os.NewFile(uintptr(fds[0]), "a"), os.NewFile(uintptr(fds[1]), "b")
		b, err := NewSocketBackend(f)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("type %d: %v", c.typ, err)
		case c.want == "":
			b.Close()
		case err == nil || !strings.Contains(err.Error(), c.want):
			t.Errorf("type %d: %v, want %q", c.typ, err, c.want)
		default:
			if _, serr := f.Stat(); serr != nil {
				t.Errorf("type %d: the refused file was closed: %v", c.typ, serr)
			}
			f.Close()
		}
		other.Close()
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if _, err := NewSocketBackend(r); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("pipe: %v", err)
	}
}
