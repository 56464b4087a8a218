package pci

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/corral-vmm/corral/devices"
)

// cfg is a guest's view of configuration mechanism #1 through the I/O bus.
type cfg struct {
	t   *testing.T
	bus *devices.Bus
}

func newCfg(t *testing.T, h *HostBridge) *cfg {
	t.Helper()
	var b devices.Bus
	if err := b.Insert(ConfigAddressPort, PortsSize, "pci", h); err != nil {
		t.Fatal(err)
	}
	return &cfg{t: t, bus: &b}
}

func addr(bus, slot, fn, reg uint32) uint32 {
	return 1<<31 | bus<<16 | slot<<11 | fn<<8 | reg&0xfc
}

func (c *cfg) out32(port uint64, v uint32) {
	c.t.Helper()
	if !c.bus.Write(port, binary.LittleEndian.AppendUint32(nil, v)) {
		c.t.Fatalf("write to port %#x not dispatched", port)
	}
}

func (c *cfg) in(port uint64, n int) uint32 {
	c.t.Helper()
	b := make([]byte, n)
	if !c.bus.Read(port, b) {
		c.t.Fatalf("read of port %#x not dispatched", port)
	}
	var v uint32
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint32(b[i])
	}
	return v
}

func (c *cfg) out(port uint64, n int, v uint32) {
	c.t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	if !c.bus.Write(port, b) {
		c.t.Fatalf("write to port %#x not dispatched", port)
	}
}

// read32 reads a config dword the way Linux does.
func (c *cfg) read32(slot, reg uint32) uint32 {
	c.t.Helper()
	c.out32(ConfigAddressPort, addr(0, slot, 0, reg))
	return c.in(ConfigDataPort, 4)
}

func (c *cfg) write32(slot, reg, v uint32) {
	c.t.Helper()
	c.out32(ConfigAddressPort, addr(0, slot, 0, reg))
	c.out(ConfigDataPort, 4, v)
}

func (c *cfg) read(slot, reg uint32, n int) uint32 {
	c.t.Helper()
	c.out32(ConfigAddressPort, addr(0, slot, 0, reg))
	return c.in(ConfigDataPort+uint64(reg&3), n)
}

func (c *cfg) write(slot, reg uint32, n int, v uint32) {
	c.t.Helper()
	c.out32(ConfigAddressPort, addr(0, slot, 0, reg))
	c.out(ConfigDataPort+uint64(reg&3), n, v)
}

func testDevice(t *testing.T) *ConfigSpace {
	t.Helper()
	cs := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1041, ClassCode: 0x020000,
		Revision: 1, SubsystemVendorID: 0x1af4, SubsystemID: 0x0001, InterruptPin: 1})
	for _, x := range []struct {
		i int
		b BAR
	}{
		{0, BAR{Kind: BARMem32, Size: 0x1000}},
		{1, BAR{Kind: BARIO, Size: 0x20}},
		{2, BAR{Kind: BARMem64, Size: 0x4000, Prefetchable: true}},
		{4, BAR{Kind: BARMem64, Size: 8 << 30}},
	} {
		if err := cs.AddBAR(x.i, x.b); err != nil {
			t.Fatal(err)
		}
	}
	return cs
}

func TestHostBridgeIdentity(t *testing.T) {
	c := newCfg(t, NewHostBridge(nil))
	if got := c.read32(0, 0); got != HostBridgeDeviceID<<16|HostBridgeVendorID {
		t.Errorf("00.0 ID = %#x", got)
	}
	if got := c.read32(0, 8) >> 8; got != HostBridgeClassCode {
		t.Errorf("00.0 class = %#x", got)
	}
	if got := c.read32(0, 0x0c) >> 16 & 0xff; got != 0 {
		t.Errorf("header type = %#x, want 0", got)
	}
}

func TestConfigMechanism(t *testing.T) {
	h := NewHostBridge(nil)
	dev := testDevice(t)
	if err := h.AddAt(3, dev); err != nil {
		t.Fatal(err)
	}
	c := newCfg(t, h)

	// The address register keeps only its defined bits.
	c.out32(ConfigAddressPort, 0xffff_ffff)
	if got := c.in(ConfigAddressPort, 4); got != 0x8fff_fffc {
		t.Errorf("CONFIG_ADDRESS readback = %#x, want 0x8ffffffc", got)
	}
	// Linux's pci_check_type1: a byte write to 0xcfb, then the enable bit
	// alone must read back as written.
	c.out(ConfigAddressPort+3, 1, 0x01)
	c.out32(ConfigAddressPort, 0x8000_0000)
	if got := c.in(ConfigAddressPort, 4); got != 0x8000_0000 {
		t.Errorf("type 1 probe readback = %#x", got)
	}
	// Linux's pci_sanity_check: a host bridge class word at 00.0.
	if got := c.read(0, 0x0a, 2); got != 0x0600 {
		t.Errorf("00.0 class word = %#x", got)
	}

	if got := c.read32(3, 0); got != 0x10411af4 {
		t.Errorf("03.0 ID = %#x", got)
	}
	// Enable bit clear: nothing answers.
	c.out32(ConfigAddressPort, addr(0, 3, 0, 0)&^(1<<31))
	if got := c.in(ConfigDataPort, 4); got != 0xffff_ffff {
		t.Errorf("read with enable clear = %#x", got)
	}
	// Absent slot, other bus, other function.
	for _, a := range []uint32{addr(0, 4, 0, 0), addr(1, 3, 0, 0), addr(0, 3, 1, 0), addr(0, 31, 0, 0),
		addr(0, 3, 0, 0) | 1<<24} { // register 0x100: past conventional space

		c.out32(ConfigAddressPort, a)
		if got := c.in(ConfigDataPort, 4); got != 0xffff_ffff {
			t.Errorf("read at %#x = %#x, want all ones", a, got)
		}
		c.out(ConfigDataPort, 4, 0) // ignored, must not panic
	}

	// Sub-dword reads at their natural sub-offsets.
	if got := c.read(3, 2, 2); got != 0x1041 {
		t.Errorf("word at 2 = %#x", got)
	}
	if got := c.read(3, 0x0b, 1); got != 0x02 {
		t.Errorf("byte at 0xb = %#x", got)
	}
	if got := c.read(3, 0x3d, 1); got != 1 {
		t.Errorf("interrupt pin = %#x", got)
	}
	// Unaligned data-window accesses answer all ones.
	c.out32(ConfigAddressPort, addr(0, 3, 0, 0))
	if got := c.in(ConfigDataPort+1, 2); got != 0xffff {
		t.Errorf("unaligned word = %#x", got)
	}
	// Byte write to interrupt line (writable), then to the pin (read-only).
	c.write(3, 0x3c, 1, 0x0b)
	c.write(3, 0x3d, 1, 0x04)
	if got := c.read(3, 0x3c, 2); got != 0x010b {
		t.Errorf("line/pin = %#x, want 0x010b", got)
	}
}

func TestReadOnlyBits(t *testing.T) {
	h := NewHostBridge(nil)
	dev := testDevice(t)
	slot, err := h.Add(dev)
	if err != nil || slot != 1 {
		t.Fatalf("Add = %d, %v", slot, err)
	}
	c := newCfg(t, h)
	c.write32(1, 0, 0xdeadbeef)
	c.write32(1, 8, 0xffffffff)
	if got := c.read32(1, 0); got != 0x10411af4 {
		t.Errorf("ID after write = %#x", got)
	}
	if got := c.read32(1, 8); got != 0x02000001 {
		t.Errorf("class/rev after write = %#x", got)
	}
	// Command: only the defined bits stick; status is not set by writes.
	c.write32(1, 4, 0xffff_ffff)
	if got := c.read32(1, 4); got != commandWritable {
		t.Errorf("command/status = %#x, want %#x", got, commandWritable)
	}
	// Write-1-to-clear status bits.
	dev.SetUint16(StatusOffset, 0x8000|statusCapabilities)
	c.write(1, StatusOffset, 2, 0x8000|statusCapabilities)
	if got := c.read(1, StatusOffset, 2); got != statusCapabilities {
		t.Errorf("status after W1C = %#x", got)
	}
	// Header type, expansion ROM, cap pointer: read-only.
	c.write32(1, 0x0c, 0xffff_ffff)
	if got := c.read32(1, 0x0c); got != 0xff {
		t.Errorf("0x0c = %#x, want only the cache line size", got)
	}
	c.write32(1, ExpansionROMOffset, 0xffff_ffff)
	if got := c.read32(1, ExpansionROMOffset); got != 0 {
		t.Errorf("expansion ROM = %#x", got)
	}
}

func TestBARSizing(t *testing.T) {
	h := NewHostBridge(nil)
	dev := testDevice(t)
	h.AddAt(1, dev)
	c := newCfg(t, h)
	size := func(reg uint32) uint32 {
		old := c.read32(1, reg)
		c.write32(1, reg, 0xffff_ffff)
		v := c.read32(1, reg)
		c.write32(1, reg, old)
		return v
	}
	if got := size(0x10); got != 0xffff_f000 {
		t.Errorf("mem32 4K sizing = %#x", got)
	}
	if got := size(0x14); got != 0x0000_ffe1 {
		t.Errorf("io 32 sizing = %#x", got)
	}
	if got := size(0x18); got != 0xffff_c00c {
		t.Errorf("mem64 16K low sizing = %#x", got)
	}
	if got := size(0x1c); got != 0xffff_ffff {
		t.Errorf("mem64 16K high sizing = %#x", got)
	}
	if got := size(0x20); got != 0x0000_0004 {
		t.Errorf("mem64 8G low sizing = %#x", got)
	}
	if got := size(0x24); got != 0xffff_fffe {
		t.Errorf("mem64 8G high sizing = %#x", got)
	}
	// Sizing restored the old values (0 here).
	if got := c.read32(1, 0x10); got != 0 {
		t.Errorf("BAR0 after sizing = %#x", got)
	}
	// Program addresses; low bits are flags and stay.
	c.write32(1, 0x18, 0xc000_4000|0xf)
	c.write32(1, 0x1c, 0x1)
	if got := dev.BARAddress(2); got != 0x1_c000_4000 {
		t.Errorf("BAR2 = %#x", got)
	}
	if got := c.read32(1, 0x18); got != 0xc000_400c {
		t.Errorf("BAR2 low = %#x", got)
	}
}

func TestAddBARErrors(t *testing.T) {
	cs := NewConfigSpace(Header{})
	bad := []struct {
		i int
		b BAR
	}{
		{-1, BAR{Kind: BARMem32, Size: 0x1000}},
		{6, BAR{Kind: BARMem32, Size: 0x1000}},
		{5, BAR{Kind: BARMem64, Size: 0x1000}},
		{0, BAR{Kind: BARMem32, Size: 0x1800}},
		{0, BAR{Kind: BARMem32, Size: 8}},
		{0, BAR{Kind: BARIO, Size: 512}},
		{0, BAR{Kind: BARIO, Size: 4, Prefetchable: true}},
		{0, BAR{Kind: BARMem32, Size: 1 << 32}},
		{0, BAR{Kind: BARNone, Size: 16}},
	}
	for _, x := range bad {
		if err := cs.AddBAR(x.i, x.b); !errors.Is(err, ErrBadBAR) {
			t.Errorf("AddBAR(%d, %+v) = %v, want ErrBadBAR", x.i, x.b, err)
		}
	}
	if err := cs.AddBAR(1, BAR{Kind: BARMem64, Size: 0x1000}); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 2} {
		if err := cs.AddBAR(i, BAR{Kind: BARMem32, Size: 0x1000}); !errors.Is(err, ErrBadBAR) {
			t.Errorf("AddBAR over 64-bit BAR at %d = %v", i, err)
		}
	}
	if err := cs.AddBAR(0, BAR{Kind: BARMem64, Size: 0x1000}); !errors.Is(err, ErrBadBAR) {
		t.Errorf("64-bit BAR whose upper half is taken = %v", err)
	}
}

// walkCaps follows the capability list as Linux's pci_find_capability does.
func walkCaps(t *testing.T, c *cfg, slot uint32) []uint32 {
	t.Helper()
	if c.read(slot, StatusOffset, 2)&statusCapabilities == 0 {
		return nil
	}
	var offs []uint32
	p := c.read(slot, CapabilitiesOffset, 1) &^ 3
	for p != 0 && len(offs) < 48 {
		offs = append(offs, p)
		p = c.read(slot, p+1, 1) &^ 3
	}
	return offs
}

func TestCapabilities(t *testing.T) {
	h := NewHostBridge(nil)
	dev := testDevice(t)
	h.AddAt(2, dev)
	c := newCfg(t, h)
	if offs := walkCaps(t, c, 2); offs != nil {
		t.Fatalf("caps before any added: %v", offs)
	}
	o1, err := dev.AddCapability(Capability{ID: 0x09, Data: []byte{14, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	o2, err := dev.AddCapability(Capability{ID: 0x11, Data: []byte{0x03, 0x00, 0, 0, 0, 0, 0, 0, 0, 0},
		Writable: []byte{0x00, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0}})
	if err != nil {
		t.Fatal(err)
	}
	if o1 != 0x40 || o2 != 0x50 {
		t.Errorf("offsets %#x %#x, want 0x40 0x50 (dword aligned)", o1, o2)
	}
	offs := walkCaps(t, c, 2)
	if len(offs) != 2 || offs[0] != 0x40 || offs[1] != 0x50 {
		t.Fatalf("walk = %#x", offs)
	}
	if id := c.read(2, offs[1], 1); id != 0x11 {
		t.Errorf("second cap ID %#x", id)
	}
	// MSI-X message control: only enable/mask bits write; table size stays.
	c.write(2, 0x52, 2, 0xffff)
	if got := c.read(2, 0x52, 2); got != 0xc003 {
		t.Errorf("MSI-X control = %#x, want 0xc003", got)
	}
	// The guest cannot relink the list or change the vendor cap.
	c.write32(2, 0x40, 0xffff_ffff)
	c.write32(2, CapabilitiesOffset, 0)
	if got := c.read32(2, 0x40); got != 0x010e5009 {
		t.Errorf("vendor cap dword = %#x", got)
	}
	if offs := walkCaps(t, c, 2); len(offs) != 2 {
		t.Errorf("walk after guest writes = %#x", offs)
	}
	// Full: a capability that does not fit.
	if _, err := dev.AddCapability(Capability{ID: 1, Data: make([]byte, 200)}); !errors.Is(err, ErrNoRoom) {
		t.Errorf("oversized capability: %v", err)
	}
	if _, err := dev.AddCapability(Capability{ID: 1, Data: make([]byte, 4), Writable: make([]byte, 3)}); err == nil {
		t.Error("mask of the wrong length accepted")
	}
}

func TestBARChangeHook(t *testing.T) {
	h := NewHostBridge(nil)
	dev := testDevice(t)
	h.AddAt(1, dev)
	c := newCfg(t, h)
	var got []BARChange
	dev.OnBARChange(func(ch BARChange) {
		// The hook may read the config space.
		_ = dev.BARAddress(ch.Index)
		got = append(got, ch)
	})
	c.write32(1, 0x10, 0xc000_0000)
	if len(got) != 0 {
		t.Fatalf("decode off, yet hook ran: %+v", got)
	}
	c.write(1, CommandOffset, 2, CommandMemory)
	if len(got) != 1 || got[0].Index != 0 || got[0].New != (BARMapping{0xc000_0000, true}) || got[0].Old.Mapped {
		t.Fatalf("enable memory decode: %+v", got)
	}
	got = nil
	c.write32(1, 0x10, 0xc000_1000)
	if len(got) != 1 || got[0].Old.Addr != 0xc000_0000 || got[0].New != (BARMapping{0xc000_1000, true}) {
		t.Fatalf("move: %+v", got)
	}
	got = nil
	// Sizing with decode on: the all-ones pattern does not decode.
	c.write32(1, 0x10, 0xffff_ffff)
	if len(got) != 1 || got[0].New.Mapped {
		t.Fatalf("sizing pattern: %+v", got)
	}
	got = nil
	c.write32(1, 0x10, 0xc000_1000)
	c.write(1, CommandOffset, 2, 0)
	if len(got) != 2 || !got[0].New.Mapped || got[1].New.Mapped || got[1].Old.Addr != 0xc000_1000 {
		t.Fatalf("restore then disable: %+v", got)
	}
	got = nil
	// I/O decode affects only the I/O BAR.
	c.write32(1, 0x14, 0xc040)
	c.write(1, CommandOffset, 2, CommandIO)
	if len(got) != 1 || got[0].Index != 1 || got[0].BAR.Kind != BARIO || got[0].New != (BARMapping{0xc040, true}) {
		t.Fatalf("io decode: %+v", got)
	}
}

type region struct{ id byte }

func (r region) Read(_ uint64, data []byte) {
	for i := range data {
		data[i] = r.id
	}
}
func (region) Write(uint64, []byte) {}

func TestBusMapper(t *testing.T) {
	var mem, io devices.Bus
	if err := mem.Insert(0xd000_0000, 0x1000, "other", region{9}); err != nil {
		t.Fatal(err)
	}
	dev := NewConfigSpace(Header{VendorID: 1})
	dev.AddBAR(0, BAR{Kind: BARMem32, Size: 0x1000})
	dev.AddBAR(1, BAR{Kind: BARIO, Size: 0x40})
	dev.AddBAR(2, BAR{Kind: BARMem64, Size: 0x10_0000})
	m := NewBusMapper("test", &mem, &io, [6]devices.Device{region{1}, region{2}, region{3}}, nil)
	dev.OnBARChange(m.Update)
	alloc, _ := NewAllocator(0xc000_0000, 0x1000_0000)
	ioAlloc, _ := NewAllocator(0xc000, 0x4000)
	if err := AssignBARs(dev, alloc, ioAlloc); err != nil {
		t.Fatal(err)
	}
	if n := len(mem.Ranges()); n != 1 {
		t.Fatalf("mapped before decode enabled: %v", mem.Ranges())
	}
	dev.SetCommand(CommandMemory | CommandIO)
	b := []byte{0}
	a0 := dev.BARAddress(0)
	if !mem.Read(a0, b) || b[0] != 1 {
		t.Fatalf("BAR0 at %#x not mapped: %v", a0, mem.Ranges())
	}
	if !mem.Read(dev.BARAddress(2)+0xf_ffff, b) || b[0] != 3 {
		t.Fatalf("BAR2 not mapped: %v", mem.Ranges())
	}
	if !io.Read(dev.BARAddress(1), b) || b[0] != 2 {
		t.Fatalf("BAR1 not on the io bus: %v", io.Ranges())
	}
	// Guest moves BAR0 onto "other": left unmapped, other untouched.
	h := NewHostBridge(nil)
	h.AddAt(1, dev)
	c := newCfg(t, h)
	c.write32(1, 0x10, 0xd000_0000)
	if !mem.Read(0xd000_0000, b) || b[0] != 9 {
		t.Fatal("other device displaced")
	}
	if mem.Read(a0, b) {
		t.Fatal("BAR0 still at its old address")
	}
	// Then somewhere free: mapped again.
	c.write32(1, 0x10, 0xe000_0000)
	if !mem.Read(0xe000_0000, b) || b[0] != 1 {
		t.Fatalf("BAR0 not remapped: %v", mem.Ranges())
	}
	c.write(1, CommandOffset, 2, 0)
	if len(mem.Ranges()) != 1 || len(io.Ranges()) != 0 {
		t.Fatalf("decode off, still mapped: %v %v", mem.Ranges(), io.Ranges())
	}
}

func TestAllocator(t *testing.T) {
	a, err := NewAllocator(0xc000_0000, 0x10_0000)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []struct{ size, want uint64 }{
		{0x1000, 0xc000_0000},
		{0x4000, 0xc000_4000},
		{0x100, 0xc000_8000},
		{0x8_0000, 0xc008_0000},
	} {
		got, err := a.Alloc(x.size)
		if err != nil || got != x.want {
			t.Errorf("Alloc(%#x) = %#x, %v; want %#x", x.size, got, err, x.want)
		}
	}
	if _, err := a.Alloc(0x8_0000); !errors.Is(err, ErrNoSpace) {
		t.Errorf("over-full Alloc: %v", err)
	}
	if _, err := a.Alloc(0x3000); err == nil {
		t.Error("non power of two accepted")
	}
	// A window ending at the top of the address space fills exactly.
	top, _ := NewAllocator(^uint64(0)-0xfff, 0x1000)
	if got, err := top.Alloc(0x1000); err != nil || got != ^uint64(0)-0xfff {
		t.Errorf("top Alloc = %#x, %v", got, err)
	}
	if _, err := top.Alloc(16); !errors.Is(err, ErrNoSpace) {
		t.Errorf("Alloc after the top: %v", err)
	}
	if _, err := NewAllocator(^uint64(0), 2); err == nil {
		t.Error("wrapping window accepted")
	}
}

func TestSetBARAddressChecks(t *testing.T) {
	dev := testDevice(t)
	for _, x := range []struct {
		i    int
		addr uint64
	}{{0, 0xc000_0800}, {0, 0xffff_f000 + 0x1000}, {1, 0x1_0000}, {3, 0}, {5, 0}, {-1, 0}} {
		if err := dev.SetBARAddress(x.i, x.addr); err == nil {
			t.Errorf("SetBARAddress(%d, %#x) accepted", x.i, x.addr)
		}
	}
}

func TestResetPort(t *testing.T) {
	n := 0
	c := newCfg(t, NewHostBridge(func() { n++ }))
	c.out(ResetControlPort, 1, 0x02)
	if n != 0 {
		t.Fatal("reset without RST_CPU")
	}
	c.out(ResetControlPort, 1, 0x06)
	if n != 1 {
		t.Fatal("no reset on 0x06 to 0xcf9")
	}
	// A dword write at 0xcf8 is the address register, never a reset.
	c.out32(ConfigAddressPort, 0xffff_ffff)
	if n != 1 {
		t.Fatal("address write reset the machine")
	}
}
