package virtionet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"testing"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

const allOffloads = OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN

// ctrlCmd sends a command as Linux does (class and command, data, ack in
// three descriptors) and returns the ack the device wrote.
func (h *harness) ctrlCmd(class, command byte, data []byte) byte {
	h.t.Helper()
	return h.ctrlRaw(append([]byte{class, command}, data...), 1)
}

// ctrlRaw sends readable bytes and a writable area of ack bytes (0: none)
// as a control chain and returns the first writable byte once the chain
// is used.
func (h *harness) ctrlRaw(in []byte, ack int) byte {
	h.t.Helper()
	gpa := h.ctd.Alloc(uint64(len(in)+max(ack, 1)), 16)
	if err := h.mem.WriteAt(in, gpa); err != nil {
		h.t.Fatal(err)
	}
	ackAt := gpa + uint64(len(in))
	h.mem.WriteAt([]byte{0xaa}, ackAt)
	var segs []testdriver.Seg
	if len(in) > 0 {
		segs = append(segs, testdriver.Seg{Addr: gpa, Len: uint32(min(len(in), 2))})
		if len(in) > 2 {
			segs = append(segs, testdriver.Seg{Addr: gpa + 2, Len: uint32(len(in) - 2)})
		}
	}
	if ack > 0 {
		segs = append(segs, testdriver.Seg{Addr: ackAt, Len: uint32(ack), Write: true})
	}
	if _, ok := h.ctd.Add(segs...); !ok {
		h.t.Fatal("control queue full")
	}
	h.dev.Notify(h.ctrlQ)
	h.wait("a control ack", func() bool {
		_, n, ok := h.ctd.Used()
		if ok && n != 1 {
			h.t.Fatalf("control chain used with %d bytes, want 1", n)
		}
		return ok
	})
	b := make([]byte, 1)
	h.mem.ReadAt(b, ackAt)
	return b[0]
}

func macTableBytes(macs ...[6]byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(macs)))
	for _, m := range macs {
		b = append(b, m[:]...)
	}
	return b
}

func le16(v uint16) []byte { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

// The commands Linux sends are carried out and recorded: receive modes,
// MAC tables, the MAC, VLAN filter entries and guest offloads (which reach
// the backend and the receive path).
func TestCtrlCommands(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: allOffloads})
	if st := h.dev.Control(); !st.Promisc || st.AllMulti || st.GuestOffloads != FGuestCsum|FGuestTSO4|FGuestTSO6|FGuestECN {
		t.Fatalf("initial control state %+v", st)
	}
	u1, u2 := [6]byte{0x02, 1, 1, 1, 1, 1}, [6]byte{0x02, 2, 2, 2, 2, 2}
	m1 := [6]byte{0x01, 0, 0x5e, 0, 0, 1}
	newMAC := [6]byte{0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee}
	for _, c := range []struct {
		class, cmd byte
		data       []byte
	}{
		{ctrlClassRx, ctrlRxPromisc, []byte{0}},
		{ctrlClassRx, ctrlRxAllMulti, []byte{1}},
		{ctrlClassMAC, ctrlMACTableSet, append(macTableBytes(u1, u2), macTableBytes(m1)...)},
		{ctrlClassMAC, ctrlMACAddrSet, newMAC[:]},
		{ctrlClassVLAN, ctrlVLANAdd, le16(5)},
		{ctrlClassVLAN, ctrlVLANAdd, le16(4095)},
		{ctrlClassVLAN, ctrlVLANAdd, le16(100)},
		{ctrlClassVLAN, ctrlVLANDel, le16(5)},
		{ctrlClassGuestOffl, ctrlGuestOfflSet, le64(FGuestCsum)},
	} {
		if ack := h.ctrlCmd(c.class, c.cmd, c.data); ack != ctrlAckOK {
			t.Fatalf("class %d command %d: ack %d", c.class, c.cmd, ack)
		}
	}
	st := h.dev.Control()
	want := ControlState{AllMulti: true,
		Unicast:   []net.HardwareAddr{u1[:], u2[:]},
		Multicast: []net.HardwareAddr{m1[:]},
		VLANs:     []uint16{100, 4095}, GuestOffloads: FGuestCsum, Pairs: 1}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Fatalf("control state\n%+v\nwant\n%+v", st, want)
	}
	if !bytes.Equal(h.dev.MAC(), newMAC[:]) {
		t.Fatalf("MAC %v after MAC_ADDR_SET", h.dev.MAC())
	}
	var cfg [6]byte
	h.dev.ReadConfig(cfgMAC, cfg[:])
	if cfg != newMAC {
		t.Fatalf("config MAC %x", cfg)
	}
	if o, _ := h.be.lastOffload(); o != OffloadCsum {
		t.Fatalf("backend offloads %#x, want checksum only", o)
	}
	// The receive path no longer passes TSO frames.
	h.refill(2, bigBuf)
	tso := header{flags: HdrFNeedsCsum, gsoType: GSOTCPv4, gsoSize: 1448, csumStart: 34, csumOffset: 16}
	pkt := make([]byte, HeaderLen+3000)
	tso.encode(pkt, 0)
	copy(pkt[HeaderLen:], rawFrame(3000, 1))
	h.peerWrite(pkt)
	next := rawFrame(80, 2)
	h.peerWrite(append(make([]byte, HeaderLen), next...))
	if p := h.takeRx(); !bytes.Equal(p.frame, next) {
		t.Fatal("a TSO frame reached a guest that turned TSO off")
	}
	// Turning it back on.
	if ack := h.ctrlCmd(ctrlClassGuestOffl, ctrlGuestOfflSet, le64(FGuestCsum|FGuestTSO4)); ack != ctrlAckOK {
		t.Fatal("guest offloads back on refused")
	}
	h.peerWrite(pkt)
	if p := h.takeRx(); len(p.frame) != 3000 || p.hdr.gsoType != GSOTCPv4 {
		t.Fatalf("TSO frame after turning TSO on: %d bytes, header %+v", len(p.frame), p.hdr)
	}
	if c := h.dev.Counters(); c.CtrlCommands != 10 || c.CtrlErrors != 0 || c.RxDropOffload != 1 {
		t.Fatalf("counters %+v", c)
	}
	// Reset forgets it all, the MAC included.
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(h.dev.MAC(), guestMAC[:]) || !h.dev.Control().Promisc || h.dev.Control().VLANs != nil {
		t.Fatalf("after Reset: MAC %v, control %+v", h.dev.MAC(), h.dev.Control())
	}
}

// Malformed, unknown and not negotiated commands get VIRTIO_NET_ERR, are
// counted, and change nothing.
func TestCtrlRejects(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: OffloadCsum, drop: FGuestCsum})
	before := h.dev.Control()
	long := make([]byte, ctrlMaxCmd+1)
	long[0] = ctrlClassRx
	hugeTable := binary.LittleEndian.AppendUint32([]byte{ctrlClassMAC, ctrlMACTableSet}, 0xffffffff)
	cases := map[string][]byte{
		"empty":                  {},
		"class only":             {ctrlClassRx},
		"unknown class":          {9, 0},
		"rx no data":             {ctrlClassRx, ctrlRxPromisc},
		"rx two bytes":           {ctrlClassRx, ctrlRxPromisc, 1, 0},
		"rx value 2":             {ctrlClassRx, ctrlRxPromisc, 2},
		"rx ALLUNI (RX_EXTRA)":   {ctrlClassRx, 2, 1},
		"mac table huge":         append(hugeTable, make([]byte, 12)...),
		"mac table one":          append([]byte{ctrlClassMAC, ctrlMACTableSet}, macTableBytes([6]byte{2})...),
		"mac table trailing":     append(append([]byte{ctrlClassMAC, ctrlMACTableSet}, append(macTableBytes(), macTableBytes()...)...), 0),
		"mac table short":        {ctrlClassMAC, ctrlMACTableSet, 1, 0, 0, 0, 2, 0},
		"mac unknown command":    {ctrlClassMAC, 2, 0},
		"mac addr multicast":     {ctrlClassMAC, ctrlMACAddrSet, 1, 2, 3, 4, 5, 6},
		"mac addr zero":          {ctrlClassMAC, ctrlMACAddrSet, 0, 0, 0, 0, 0, 0},
		"mac addr short":         {ctrlClassMAC, ctrlMACAddrSet, 2, 2, 3, 4, 5},
		"vlan 4096":              append([]byte{ctrlClassVLAN, ctrlVLANAdd}, le16(4096)...),
		"vlan three bytes":       {ctrlClassVLAN, ctrlVLANAdd, 1, 0, 0},
		"vlan unknown command":   append([]byte{ctrlClassVLAN, 2}, le16(1)...),
		"announce (not offered)": {ctrlClassAnnounce, 0},
		"mq (not offered)":       append([]byte{ctrlClassMQ, 0}, le16(1)...),
		"offloads not taken":     append([]byte{ctrlClassGuestOffl, ctrlGuestOfflSet}, le64(FGuestCsum)...),
		"offloads short":         {ctrlClassGuestOffl, ctrlGuestOfflSet, 0, 0, 0, 0, 0, 0, 0},
		"offloads unknown cmd":   append([]byte{ctrlClassGuestOffl, 1}, le64(0)...),
		"too long":               long,
	}
	for name, in := range cases {
		if ack := h.ctrlRaw(in, 1); ack != ctrlAckErr {
			t.Errorf("%s: ack %d, want VIRTIO_NET_ERR", name, ack)
		}
	}
	if c := h.dev.Counters(); c.CtrlErrors != uint64(len(cases)) || c.CtrlCommands != 0 || c.ProtocolErrors != 0 {
		t.Fatalf("counters %+v", c)
	}
	if after := h.dev.Control(); fmt.Sprint(after) != fmt.Sprint(before) || !bytes.Equal(h.dev.MAC(), guestMAC[:]) {
		t.Fatalf("control state changed: %+v → %+v, MAC %v", before, after, h.dev.MAC())
	}
	// Offloads the guest did take can be set; zero is always allowed.
	if ack := h.ctrlCmd(ctrlClassGuestOffl, ctrlGuestOfflSet, le64(0)); ack != ctrlAckOK {
		t.Fatal("guest offloads 0 refused")
	}
}

// Classes whose feature the driver did not take are refused.
func TestCtrlClassesNeedTheirFeature(t *testing.T) {
	h := newHarness(t, opts{drop: FCtrlRx | FCtrlVLAN | FCtrlMACAddr})
	for _, in := range [][]byte{
		{ctrlClassRx, ctrlRxPromisc, 1},
		append([]byte{ctrlClassMAC, ctrlMACTableSet}, append(macTableBytes(), macTableBytes()...)...),
		{ctrlClassMAC, ctrlMACAddrSet, 2, 2, 3, 4, 5, 6},
		append([]byte{ctrlClassVLAN, ctrlVLANAdd}, le16(1)...),
	} {
		if ack := h.ctrlRaw(in, 1); ack != ctrlAckErr {
			t.Errorf("class %d command %d without its feature: ack %d", in[0], in[1], ack)
		}
	}
}

// A MAC table longer than MACTableMax keeps the first entries and says it
// overflowed.
func TestCtrlMACTableOverflow(t *testing.T) {
	h := newHarness(t, opts{})
	var macs [][6]byte
	for i := range MACTableMax + 6 {
		macs = append(macs, [6]byte{0x01, 0, 0x5e, 0, byte(i >> 8), byte(i)})
	}
	if ack := h.ctrlCmd(ctrlClassMAC, ctrlMACTableSet, append(macTableBytes(), macTableBytes(macs...)...)); ack != ctrlAckOK {
		t.Fatal("long table refused")
	}
	st := h.dev.Control()
	if len(st.Multicast) != MACTableMax || !st.MulticastOverflow || st.UnicastOverflow || len(st.Unicast) != 0 {
		t.Fatalf("control state %+v", st)
	}
	if !slices.Equal(st.Multicast[MACTableMax-1], net.HardwareAddr(macs[MACTableMax-1][:])) {
		t.Fatalf("last entry kept %v", st.Multicast[MACTableMax-1])
	}
}

// A control chain without room for the ack breaks the protocol: the
// device fails with a guest error.
func TestCtrlNoAckFailsDevice(t *testing.T) {
	h := newHarness(t, opts{})
	gpa := h.ctd.Alloc(3, 16)
	h.mem.WriteAt([]byte{ctrlClassRx, ctrlRxPromisc, 1}, gpa)
	h.ctd.Add(testdriver.Seg{Addr: gpa, Len: 3})
	h.dev.Notify(CtrlQueue)
	if err := h.expectFail(); queue.KindOf(err) != queue.BadRequest {
		t.Fatalf("error %v, want a BadRequest guest error", err)
	}
	if c := h.dev.Counters(); c.ProtocolErrors != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// A backend that refuses the new offloads gets VIRTIO_NET_ERR and the
// receive path keeps the old ones.
func TestCtrlGuestOffloadsRefusedByBackend(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: allOffloads, drop: FGuestTSO6 | FGuestECN})
	h.be.loseOffloads(OffloadCsum)
	if ack := h.ctrlCmd(ctrlClassGuestOffl, ctrlGuestOfflSet, le64(FGuestCsum|FGuestTSO4)); ack != ctrlAckErr {
		t.Fatalf("ack %d, want VIRTIO_NET_ERR", ack)
	}
	rx := h.dev.active.Load().pairs[0].rx
	if o := Offload(rx.guestOff.Load()); o != OffloadCsum|OffloadTSO4 {
		t.Fatalf("receive offloads %#x after a refused change", o)
	}
	if st := h.dev.Control(); st.GuestOffloads != FGuestCsum|FGuestTSO4 {
		t.Fatalf("recorded offloads %#x", st.GuestOffloads)
	}
}

// The control state survives a snapshot: saved, restored into a fresh
// device, and in force when it is activated (the backend is told the
// guest's offloads).
func TestCtrlStateRoundTrip(t *testing.T) {
	h := newHarness(t, opts{vnet: true, offloads: allOffloads})
	newMAC := [6]byte{0x02, 9, 8, 7, 6, 5}
	for _, c := range [][]byte{
		{ctrlClassRx, ctrlRxPromisc, 0},
		append([]byte{ctrlClassMAC, ctrlMACTableSet}, append(macTableBytes([6]byte{2, 1}), macTableBytes([6]byte{1, 2}, [6]byte{1, 3})...)...),
		append([]byte{ctrlClassMAC, ctrlMACAddrSet}, newMAC[:]...),
		append([]byte{ctrlClassVLAN, ctrlVLANAdd}, le16(42)...),
		append([]byte{ctrlClassGuestOffl, ctrlGuestOfflSet}, le64(FGuestCsum|FGuestTSO6)...),
	} {
		if h.ctrlRaw(c, 1) != ctrlAckOK {
			t.Fatalf("command %v refused", c)
		}
	}
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	state, err := h.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	want := h.dev.Control()

	h2 := newHarness(t, opts{vnet: true, offloads: allOffloads})
	if err := h2.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if err := h2.dev.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	if got := h2.dev.Control(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("restored control state\n%+v\nwant\n%+v", got, want)
	}
	if !bytes.Equal(h2.dev.MAC(), newMAC[:]) {
		t.Fatalf("restored MAC %v", h2.dev.MAC())
	}
	h2.activate()
	if o, _ := h2.be.lastOffload(); o != OffloadCsum|OffloadTSO6 {
		t.Fatalf("backend offloads %#x after restore, want the guest's", o)
	}
	if got := h2.dev.Control(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatal("activation after restore reset the control state")
	}
	// A later activation (after a guest reset) starts afresh.
	if err := h2.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	h2.activate()
	if st := h2.dev.Control(); !st.Promisc || !bytes.Equal(h2.dev.MAC(), guestMAC[:]) {
		t.Fatalf("after reset: %+v, MAC %v", st, h2.dev.MAC())
	}
}
