package virtionet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

func TestConfigSpaceAndFeatures(t *testing.T) {
	base := uint64(virtio.FVersion1 | virtio.FEventIdx | virtio.FIndirectDesc | FMAC | FStatus | FMTU | FMrgRxbuf |
		FCtrlVQ | FCtrlRx | FCtrlVLAN | FCtrlMACAddr)
	const cgo = FCtrlGuestOffloads // offered with receive offloads
	all := OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN
	cases := []struct {
		name     string
		vnet     bool
		off      Offload
		noOff    bool
		features uint64
	}{
		{"plain backend", false, 0, false, base},
		{"plain backend claiming offloads", false, all, false, base},
		{"vnet without offloads", true, 0, false, base},
		{"vnet, checksum only", true, OffloadCsum, false, base | cgo | FCsum | FGuestCsum},
		{"vnet, TSO without checksum", true, OffloadTSO4, false, base},
		{"vnet, TSO4", true, OffloadCsum | OffloadTSO4, false, base | cgo | FCsum | FGuestCsum | FHostTSO4 | FGuestTSO4},
		{"vnet, ECN without TSO", true, OffloadCsum | OffloadTSOECN, false, base | cgo | FCsum | FGuestCsum},
		{"vnet, all", true, all, false, base | cgo | FCsum | FGuestCsum | FHostTSO4 | FGuestTSO4 | FHostTSO6 | FGuestTSO6 | FHostECN | FGuestECN},
		{"vnet, all, NoOffloads", true, all, true, base},
	}
	for _, c := range cases {
		be, _ := newTestBackend(t, c.vnet, c.off)
		d, err := New(Config{Backend: be, MAC: guestMAC[:], MTU: 9000, NoOffloads: c.noOff})
		if err != nil {
			t.Fatal(err)
		}
		if d.Features() != c.features {
			t.Errorf("%s: features %#x, want %#x", c.name, d.Features(), c.features)
		}
		if d.Features()&(FMQ|FGuestUFO|FHostUFO) != 0 {
			t.Errorf("%s: offers features it does not implement", c.name)
		}
		d.Close()
	}
	be, _ := newTestBackend(t, false, 0)
	d, err := New(Config{Backend: be, MAC: guestMAC[:], MTU: 9000})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Type() != virtio.TypeNet || d.NumQueues() != 3 || d.MaxQueueSize() != DefaultQueueSize || d.ConfigSize() != 12 {
		t.Fatalf("type %d queues %d size %d config %d", d.Type(), d.NumQueues(), d.MaxQueueSize(), d.ConfigSize())
	}
	cfg := make([]byte, 16)
	d.ReadConfig(0, cfg)
	want := append(append([]byte(nil), guestMAC[:]...), 1, 0, 1, 0, 0x28, 0x23, 0, 0, 0, 0) // status up, 1 pair, MTU 9000
	if !bytes.Equal(cfg, want) {
		t.Fatalf("config % x, want % x", cfg, want)
	}
	d.WriteConfig(0, []byte{1, 2, 3, 4, 5, 6})
	p := make([]byte, 2)
	d.ReadConfig(cfgMTU, p)
	if binary.LittleEndian.Uint16(p) != 9000 {
		t.Fatal("mtu field")
	}
	d.ReadConfig(cfgMAC, cfg[:6])
	if !bytes.Equal(cfg[:6], guestMAC[:]) {
		t.Fatal("config write changed the MAC")
	}
	d.ReadConfig(11, p) // straddles the end
	if p[0] != 0x23 || p[1] != 0 {
		t.Fatalf("read across the end: % x", p)
	}
	d.ReadConfig(-1, p)
	d.ReadConfig(1<<30, p)
	if d.MAC().String() != "02:63:72:00:07:02" || d.MTU() != 9000 {
		t.Fatalf("MAC %v MTU %d", d.MAC(), d.MTU())
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	be, _ := newTestBackend(t, false, 0)
	defer be.Close()
	for _, c := range []Config{
		{MAC: guestMAC[:]},
		{Backend: be},
		{Backend: be, MAC: []byte{1, 2, 3, 4, 5, 6}},    // multicast
		{Backend: be, MAC: []byte{0, 0, 0, 0, 0, 0}},    // zero
		{Backend: be, MAC: []byte{2, 0, 0, 0, 0}},       // short
		{Backend: be, MAC: guestMAC[:], MTU: 67},        // below IPv4's minimum
		{Backend: be, MAC: guestMAC[:], MTU: 65536},     // over 16 bits
		{Backend: be, MAC: guestMAC[:], QueueSize: 300}, // not a power of two
		{Backend: be, MAC: guestMAC[:], QueueSize: 1},   // too small
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) accepted", c)
		}
	}
}

func TestActivateChecks(t *testing.T) {
	be, _ := newTestBackend(t, true, OffloadCsum|OffloadTSO4)
	d, err := New(Config{Backend: be, MAC: guestMAC[:]})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: make([]byte, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	mk := func() []*queue.Queue {
		var qs []*queue.Queue
		for i := range 3 {
			drv := testdriver.New(mem, 16, uint64(0x1000+i*0x10000), uint64(0x10000+i*0x10000), 0)
			q, err := queue.New(mem, drv.L, virtio.QueueOptions(d.Features(), 16))
			if err != nil {
				t.Fatal(err)
			}
			qs = append(qs, q)
		}
		return qs
	}
	irq := &fakeIRQ{ch: make(chan int, 4)}
	for name, a := range map[string]virtio.Activation{
		"one queue":           {Mem: mem, Features: virtio.FVersion1, Queues: mk()[:1], Interrupt: irq},
		"feature not offered": {Mem: mem, Features: virtio.FVersion1 | FGuestUFO, Queues: mk(), Interrupt: irq},
		"no VERSION_1":        {Mem: mem, Features: FMAC, Queues: mk(), Interrupt: irq},
		"no memory":           {Features: virtio.FVersion1, Queues: mk(), Interrupt: irq},
		"no interrupt":        {Mem: mem, Features: virtio.FVersion1, Queues: mk()},
	} {
		if err := d.Activate(context.Background(), a); err == nil {
			t.Errorf("%s: activated", name)
			d.Reset()
		}
	}
	// The receive offloads the guest accepted reach the backend.
	first := mk()
	again := mk()
	err = d.Activate(context.Background(), virtio.Activation{Mem: mem, Features: virtio.FVersion1 | FGuestCsum | FCsum | FHostTSO4, Queues: first, Interrupt: irq})
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := be.lastOffload(); o != OffloadCsum {
		t.Fatalf("backend offload %#x, want CSUM only (no GUEST_TSO4 accepted)", o)
	}
	// again was built before the device ran on first: mk rewrites the
	// rings in guest memory, which the running device reads.
	if err := d.Activate(context.Background(), virtio.Activation{Mem: mem, Features: virtio.FVersion1, Queues: again, Interrupt: irq}); err == nil {
		t.Fatal("activated twice")
	}
	// Queues the driver left off get no goroutine; Notify on them is harmless.
	if err := d.Reset(); err != nil {
		t.Fatal(err)
	}
	qs := mk()
	qs[RxQueue] = nil
	if err := d.Activate(context.Background(), virtio.Activation{Mem: mem, Features: virtio.FVersion1, Queues: qs, Interrupt: irq}); err != nil {
		t.Fatal(err)
	}
	d.Notify(RxQueue)
	d.Notify(7)
	d.Notify(-1)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Activate(context.Background(), virtio.Activation{Mem: mem, Features: virtio.FVersion1, Queues: mk(), Interrupt: irq}); err == nil {
		t.Fatal("activated after Close")
	}
	if err := d.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// Reset stops goroutines blocked in a backend read, waiting for receive
// buffers, and blocked in a backend write; the device then works again on
// fresh queues.
func TestResetUnblocksAndReactivates(t *testing.T) {
	h := newHarness(t, opts{})
	// The receive goroutine is blocked reading the empty backend.
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	h.activate()
	// Now it holds a frame and waits for buffers.
	h.peerWrite(rawFrame(60, 1))
	h.poll("the device to read a frame", func() bool { return h.be.reads.Load() == 1 })
	// And the transmit goroutine is blocked: the peer does not read and the
	// socket's buffer fills.
	for i := 0; i < 200; i++ {
		h.sendTx(header{}, rawFrame(60000, byte(i)), 0)
		if h.txd.FreeDescriptors() < 4 {
			break
		}
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	// Drain what the old activation wrote, then check the new one works.
	for {
		h.peer.SetReadDeadline(timeNowPlus(0))
		if _, err := h.peer.Read(make([]byte, MaxFrameLen)); err != nil {
			break
		}
	}
	h.activate()
	h.refill(1, smallBuf)
	f := rawFrame(70, 9)
	h.peerWrite(f)
	if p := h.takeRx(); !bytes.Equal(p.frame, f) {
		t.Fatal("no frame after reactivation")
	}
	g := rawFrame(80, 10)
	h.sendTx(header{}, g, 0)
	if got := h.peerRead(); !bytes.Equal(got, g) {
		t.Fatal("no transmit after reactivation")
	}
}

// Close closes the backend.
func TestCloseClosesBackend(t *testing.T) {
	h := newHarness(t, opts{})
	if err := h.dev.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.be.WriteFrame([]byte{1}); !errors.Is(err, errClosed()) {
		t.Fatalf("backend write after Close: %v", err)
	}
}
