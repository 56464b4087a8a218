package virtionet

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/corral-vmm/corral/dhcp"
)

// inFlight returns the receive and transmit queues' chains taken and not
// returned.
func (h *harness) inFlight() (rx, tx uint16) {
	r := h.dev.active.Load()
	return r.pairs[0].rx.q.InFlight(), r.pairs[0].tx.q.InFlight()
}

// quiet checks that nothing reaches the used rings or the backend's peer
// for a while.
func (h *harness) quiet(rxUsed, txUsed uint16) {
	h.t.Helper()
	h.peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := h.peer.Read(make([]byte, 2048)); err == nil {
		h.t.Fatalf("a %d-byte frame reached the host while paused", n)
	}
	if h.rxd.UsedIdx() != rxUsed || h.txd.UsedIdx() != txUsed {
		h.t.Fatalf("used idx rx %d tx %d while paused; want %d %d", h.rxd.UsedIdx(), h.txd.UsedIdx(), rxUsed, txUsed)
	}
}

// Pause holds host input (the frame read but not placed, and those still
// in the host queue), keeps nothing in flight, and holds guest kicks; all
// of it is served after Resume, in order.
func TestPauseHoldsFrames(t *testing.T) {
	h := newHarness(t, opts{})
	h.refill(1, smallBuf)
	frames := [][]byte{rawFrame(100, 1), rawFrame(200, 2), rawFrame(300, 3)}
	for _, f := range frames {
		h.peerWrite(f)
	}
	if got := h.takeRx(); !bytes.Equal(got.frame, frames[0]) {
		t.Fatal("first frame not received")
	}
	time.Sleep(50 * time.Millisecond) // the device reads frame 2 and waits for a buffer
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if rx, tx := h.inFlight(); rx != 0 || tx != 0 {
		t.Fatalf("in flight after Pause: rx %d tx %d", rx, tx)
	}
	// Buffers and a frame to send, kicked while paused: held.
	h.refill(2, smallBuf)
	out := rawFrame(64, 9)
	h.sendTx(header{}, out, 0)
	h.quiet(1, 0)
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, want := range frames[1:] {
		if got := h.takeRx(); !bytes.Equal(got.frame, want) {
			t.Fatalf("after Resume got a %d-byte frame; want the %d-byte one", len(got.frame), len(want))
		}
	}
	if got := h.peerRead(); !bytes.Equal(got, out) {
		t.Fatal("frame sent during the pause not transmitted after Resume")
	}
	h.waitTxDone(1)
	if c := h.dev.Counters(); c.RxPackets != 3 || c.TxPackets != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// A receive chain the device took and kept (too small for the frame it
// had) goes back to the avail ring on Pause, and is used after Resume.
func TestPauseReturnsKeptChain(t *testing.T) {
	h := newHarness(t, opts{drop: FMrgRxbuf})
	head := h.postRx(HeaderLen+80, 0)
	h.dev.Notify(RxQueue)
	h.peerWrite(rawFrame(500, 1)) // too big for the buffer: dropped, chain kept
	h.poll("the oversized frame dropped", func() bool { return h.dev.Counters().RxDropGuestBuffer == 1 })
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if rx, _ := h.inFlight(); rx != 0 {
		t.Fatalf("receive chains in flight after Pause: %d", rx)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	small := rawFrame(60, 2)
	h.peerWrite(small)
	var got uint32
	h.wait("the small frame", func() bool {
		id, _, ok := h.rxd.Used()
		got = id
		return ok
	})
	if uint16(got) != head {
		t.Fatalf("frame went into head %d; want the kept chain %d", got, head)
	}
}

func TestPauseResetClose(t *testing.T) {
	h := newHarness(t, opts{})
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatalf("Reset while paused: %v", err)
	}
	if err := h.dev.Resume(); err != nil || h.dev.active.Load() != nil {
		t.Fatalf("Resume after Reset = %v, running %v", err, h.dev.active.Load() != nil)
	}
	h.activate()
	h.refill(1, smallBuf)
	h.peerWrite(rawFrame(70, 5))
	h.takeRx()
	h.dev.Pause()
	if err := h.dev.Close(); err != nil {
		t.Fatalf("Close while paused: %v", err)
	}
}

// leaseDHCP is a DHCP server with a pool (no reservation), so that the
// guest's lease is a record of the lease table.
func leaseDHCP(t *testing.T) *dhcp.Server { return leaseDHCPTB(t) }

func leaseDHCPTB(t testing.TB) *dhcp.Server {
	t.Helper()
	host := netip.MustParsePrefix("10.200.8.1/24")
	srv, err := dhcp.New(dhcp.Config{
		Server: host, ServerMAC: hostMAC[:], Router: host.Addr(),
		PoolFirst: netip.MustParseAddr("10.200.8.10"), PoolLast: netip.MustParseAddr("10.200.8.20"),
		AllowAnyMAC: true, NoRateLimit: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// The device state carries the MAC and the DHCP lease table: a device
// restored from it (with a fresh backend and server) answers the guest's
// renewal with the same address.
func TestStateLeasesRoundTrip(t *testing.T) {
	srv := leaseDHCP(t)
	h := newHarness(t, opts{handler: srv})
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
	leased := ack.YourIPAddr
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	state, err := h.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}

	srv2 := leaseDHCP(t)
	be2, _ := newTestBackend(t, false, 0)
	other := net.HardwareAddr{0x02, 9, 9, 9, 9, 9}
	dev2, err := New(Config{Backend: be2, MAC: other, Handler: srv2})
	if err != nil {
		t.Fatal(err)
	}
	defer dev2.Close()
	if err := dev2.RestoreState(state); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	if !bytes.Equal(dev2.MAC(), guestMAC[:]) {
		t.Fatalf("restored MAC %v; want the saved %v", dev2.MAC(), net.HardwareAddr(guestMAC[:]))
	}
	var cfg [6]byte
	dev2.ReadConfig(cfgMAC, cfg[:])
	if cfg != guestMAC {
		t.Fatalf("config space MAC %x after restore", cfg)
	}
	got, want := srv2.Leases(), srv.Leases()
	if len(got) != 1 || len(want) != 1 || got[0].IP != want[0].IP || got[0].Client != want[0].Client || got[0].State != "bound" {
		t.Fatalf("restored leases %+v; want %+v", got, want)
	}
	// A new client on the restored server does not get the guest's address.
	out := make([]byte, srv2.ReplyBufferSize())
	m, _ := dhcpv4.NewDiscovery(net.HardwareAddr{0x02, 7, 7, 7, 7, 7})
	fr, _, _ := udpFrame(bcastMAC, [6]byte{0x02, 7, 7, 7, 7, 7}, zeroIP, bcastIP, 68, 67, m.ToBytes(), csumFull)
	reply, _ := srv2.Handle(fr, out)
	if o := parseDHCPPayload(t, reply); o.YourIPAddr.Equal(leased) {
		t.Fatalf("restored server offered the guest's leased %v to another client", leased)
	}
}

func parseDHCPPayload(t *testing.T, frame []byte) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.FromBytes(frame[EthHeaderLen+28:])
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRestoreStateRejects(t *testing.T) {
	srv := leaseDHCP(t)
	be, _ := newTestBackend(t, false, 0)
	d, err := New(Config{Backend: be, MAC: guestMAC[:], Handler: srv})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	good, _ := d.SaveState()
	be2, _ := newTestBackend(t, false, 0)
	plain, _ := New(Config{Backend: be2, MAC: guestMAC[:]})
	defer plain.Close()
	hl := int(binary.LittleEndian.Uint32(good[stHandlerLen:]))
	v1 := append([]byte(nil), good[:stHeaderSize+hl]...) // version 1: no control state
	v1[stVersion] = 1
	withLeases := append([]byte(nil), good[:stHeaderSize]...)
	withLeases[stVersion] = 1
	withLeases[stHandlerLen] = 3
	withLeases = append(withLeases, 1, 2, 3)
	ctrlAt := stHeaderSize + hl
	mod := func(off int, v byte) []byte {
		b := append([]byte(nil), good...)
		b[ctrlAt+off] = v
		return b
	}
	pairsAt := len(good) - stPairsLen
	trailer := good[pairsAt:]
	withPairs := func(offered, set uint16) []byte {
		b := append([]byte(nil), good[:pairsAt]...)
		b = binary.LittleEndian.AppendUint16(b, offered)
		return binary.LittleEndian.AppendUint16(b, set)
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for name, tc := range map[string]struct {
		dev  *Device
		data []byte
		want string
	}{
		"short":         {d, good[:4], "shorter than the 12-byte header"},
		"version":       {d, append([]byte{7, 0}, good[2:]...), "version 7"},
		"multicast":     {d, append([]byte{1, 0, 1}, good[3:]...), "is not a unicast"},
		"length v1":     {d, append(append([]byte(nil), v1...), 0), fmt.Sprintf("state of %d bytes with %d left", hl, hl+1)},
		"length":        {d, cat(good[:pairsAt], []byte{0}, trailer), "control state of"},
		"pairs short":   {d, good[:ctrlAt+3], "too short for the queue pairs"},
		"pairs set 0":   {d, withPairs(1, 0), "0 queue pairs in use of 1"},
		"pairs set 2/1": {d, withPairs(1, 2), "2 queue pairs in use of 1"},
		"pairs offered": {d, withPairs(4, 2), "saved with 4 queue pairs, the device has 1"},
		"ctrl flags":    {d, mod(stCtrlFlags, 0x10), "control state flags 0x10"},
		"ctrl MACs":     {d, mod(stCtrlUni, MACTableMax+1), "MAC tables of 65"},
		"ctrl MAC":      {d, mod(stCtrlMAC, 1), "MAC in force"},
		"ctrl offloads": {d, mod(stCtrlGuestOff, 1<<3), "guest offloads 0x8"},
		"ctrl short":    {d, cat(good[:ctrlAt+3], trailer), "shorter than its"},
		"handler":       {plain, withLeases, "this device's frame handler keeps none"},
		"leases":        {d, withLeases, "frame handler: dhcp: bad lease state"},
	} {
		err := tc.dev.RestoreState(tc.data)
		if !errors.Is(err, ErrState) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: RestoreState = %v; want ErrState with %q", name, err, tc.want)
		}
	}
}

// FuzzRestoreState restores arbitrary bytes into a device with a DHCP
// server. Invariants: no panic; a refused state leaves MAC and leases as
// they were; an accepted one saves into a state that restores again.
func FuzzRestoreState(f *testing.F) {
	srv := leaseDHCPTB(f)
	be, _ := newTestBackend(f, false, 0)
	d, err := New(Config{Backend: be, MAC: guestMAC[:], Handler: srv})
	if err != nil {
		f.Fatal(err)
	}
	defer d.Close()
	good, _ := d.SaveState()
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		srv := leaseDHCPTB(t)
		d, err := New(Config{Backend: be, MAC: guestMAC[:], Handler: srv})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.RestoreState(data); err != nil {
			if !bytes.Equal(d.MAC(), guestMAC[:]) || len(srv.Leases()) != 0 {
				t.Fatalf("refused state %v changed the device", err)
			}
			return
		}
		again, err := d.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		d2, _ := New(Config{Backend: be, MAC: guestMAC[:], Handler: leaseDHCPTB(t)})
		if err := d2.RestoreState(again); err != nil {
			t.Fatalf("saved state of a restored device does not restore: %v", err)
		}
	})
}
