package pci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/devices"
)

// guestProgram drives cs through its guest interface into a distinctive
// state: BARs placed (one 64-bit BAR above 4 GiB), decode and bus
// mastering on, an interrupt line, MSI-X enabled and masked, the
// vendor capability's writable bytes and a cleared status bit.
func guestProgram(cs *ConfigSpace) {
	w32 := func(off int, v uint32) { cs.WriteConfig(off, binary.LittleEndian.AppendUint32(nil, v)) }
	w32(BAR0Offset, 0xc040)
	w32(BAR0Offset+4, 0xfebf_1000)
	w32(BAR0Offset+8, 0xfe00_0000)
	w32(BAR0Offset+16, 0x0000_0000)
	w32(BAR0Offset+20, 0x4) // BAR 4 at 16 GiB
	cs.WriteConfig(InterruptLineOffset, []byte{11})
	cs.WriteConfig(CacheLineOffset, []byte{0x10})
	cs.WriteConfig(CommandOffset, []byte{CommandIO | CommandMemory | CommandBusMaster, CommandIntxDisable >> 8})
	msix := int(cs.Uint8(0x40 + 1)) // the second capability (MSI-X)
	cs.WriteConfig(msix+3, []byte{0xc0})
	third := int(cs.Uint8(msix + 1))
	cs.WriteConfig(third+2+15, []byte{0x12, 0x34, 0x56}) // its writable bytes
	cs.SetInterruptStatus(true)
}

func TestConfigSpaceStateRoundTrip(t *testing.T) {
	cs1 := fuzzDevice(t)
	guestProgram(cs1)
	st, err := cs1.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	cs2 := fuzzDevice(t)
	var changes []BARChange
	cs2.OnBARChange(func(ch BARChange) { changes = append(changes, ch) })
	if err := cs2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	var a, b [ConfigSize]byte
	cs1.ReadConfig(0, a[:])
	cs2.ReadConfig(0, b[:])
	if a != b {
		t.Errorf("restored configuration space\n%x\noriginal\n%x", b, a)
	}
	// The hook saw every BAR the guest had mapped start decoding where it
	// decodes, as for the guest's own writes.
	var want []BARChange
	for i := range barCountStandard {
		if m := cs1.BARMapping(i); m.Mapped {
			want = append(want, BARChange{Index: i, BAR: cs1.BAR(i), New: m, Old: BARMapping{}})
		}
	}
	if len(want) != 4 || !slices.Equal(changes, want) {
		t.Errorf("hook saw %+v, want %+v", changes, want)
	}
	if m := cs2.BARMapping(4); !m.Mapped || m.Addr != 4<<32 {
		t.Errorf("BAR 4 maps %+v after restore", m)
	}
	// Restoring the fresh state back unmaps them all, again through the hook.
	fresh, _ := fuzzDevice(t).SaveState()
	changes = nil
	if err := cs2.RestoreState(fresh); err != nil {
		t.Fatal(err)
	}
	if len(changes) != 4 || changes[0].New.Mapped {
		t.Errorf("restoring the reset state reported %+v", changes)
	}
}

func TestConfigSpaceStateRejects(t *testing.T) {
	cs := fuzzDevice(t)
	guestProgram(cs)
	good, _ := cs.SaveState()
	reg := func(b []byte, off int) *byte { return &b[configStData+off] }
	for _, tc := range []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"magic", func(b []byte) []byte { copy(b, "PCHB"); return b }, `magic "PCHB"`},
		{"version", func(b []byte) []byte { b[4] = 0; return b }, "format version 0"},
		{"short", func(b []byte) []byte { return b[:configStSize-1] }, "want at least 322"},
		{"padded", func(b []byte) []byte { return append(b, 0) }, "323 bytes, want 322"},
		{"vendor", func(b []byte) []byte { *reg(b, VendorIDOffset) ^= 1; return b }, "vendor ID (byte 0x00)"},
		{"class", func(b []byte) []byte { *reg(b, ClassCodeOffset+2) = 2; return b }, "class code (byte 0x0b)"},
		{"command-ro", func(b []byte) []byte { *reg(b, CommandOffset) |= 0x08; return b }, "command (byte 0x04)"},
		{"status-ro", func(b []byte) []byte { *reg(b, StatusOffset) &^= statusCapabilities; return b }, "status (byte 0x06)"},
		{"bar-flags", func(b []byte) []byte { *reg(b, BAR0Offset+4) |= 0x8; return b }, "BAR 1 (byte 0x14)"},
		{"bar-unaligned", func(b []byte) []byte { *reg(b, BAR0Offset+8) |= 0x10; return b }, "BAR 2 (byte 0x18)"},
		{"cap-pointer", func(b []byte) []byte { *reg(b, CapabilitiesOffset) = 0x50; return b }, "capabilities pointer"},
		{"cap-ro", func(b []byte) []byte { *reg(b, 0x50+4) ^= 1; return b }, "capability 0x11 at 0x50 byte 4"},
		{"msix-ro-control", func(b []byte) []byte { *reg(b, 0x50+2) = 0x3f; return b }, "capability 0x11 at 0x50 byte 2"},
		{"bar-decl", func(b []byte) []byte { b[configStBARs+configStBARSize+3] = 0x20; return b }, "BAR 1 saved as mem32 size 0x2000"},
		{"bar-prefetch", func(b []byte) []byte { b[configStBARs+1] = 2; return b }, "BAR 0 prefetchable flag 0x2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fresh := fuzzDevice(t)
			hooked := 0
			fresh.OnBARChange(func(BARChange) { hooked++ })
			before, _ := fresh.SaveState()
			err := fresh.RestoreState(tc.mod(slices.Clone(good)))
			if !errors.Is(err, devices.ErrBadState) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pci: config space state: ") {
				t.Fatalf("RestoreState error %v, want ErrBadState naming %q", err, tc.want)
			}
			if after, _ := fresh.SaveState(); !bytes.Equal(before, after) || hooked != 0 {
				t.Errorf("a refused state changed the device (hook calls %d)", hooked)
			}
		})
	}
	// Another device's configuration space.
	other := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1041})
	if err := other.RestoreState(good); !errors.Is(err, devices.ErrBadState) || !strings.Contains(err.Error(), "BAR 0 saved as io") {
		t.Errorf("restore into another device: %v", err)
	}
}

func TestHostBridgeStateRoundTrip(t *testing.T) {
	mk := func() (*HostBridge, *ConfigSpace) {
		h := NewHostBridge(nil)
		cs := fuzzDevice(t)
		if err := h.AddAt(3, cs); err != nil {
			t.Fatal(err)
		}
		return h, cs
	}
	h1, cs1 := mk()
	guestProgram(cs1)
	addr := func(slot, reg int) []byte {
		return binary.LittleEndian.AppendUint32(nil, uint32(addrEnable|slot<<11|reg))
	}
	h1.Write(0, addr(0, CommandOffset))
	h1.Write(4, []byte{CommandMemory, 0}) // the bridge's own command register
	h1.Write(0, addr(3, BAR0Offset+8))    // latch: slot 3, BAR 2
	st, err := h1.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != hostBridgeStSize {
		t.Errorf("state is %d bytes, want %d", len(st), hostBridgeStSize)
	}
	cst, _ := cs1.SaveState()
	h2, cs2 := mk()
	if err := h2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	if err := cs2.RestoreState(cst); err != nil {
		t.Fatal(err)
	}
	read := func(h *HostBridge, off uint64, n int) []byte {
		b := make([]byte, n)
		h.Read(off, b)
		return b
	}
	for _, r := range []struct {
		off uint64
		n   int
	}{{0, 4}, {4, 4}, {4, 2}, {6, 1}} {
		if a, b := read(h1, r.off, r.n), read(h2, r.off, r.n); !bytes.Equal(a, b) {
			t.Errorf("port 0xcf8+%d reads %x after restore, %x before", r.off, b, a)
		}
	}
	h2.Write(0, addr(0, CommandOffset))
	if got := read(h2, 4, 2); got[0] != CommandMemory {
		t.Errorf("bridge command register %x after restore", got)
	}

	for _, tc := range []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"address", func(b []byte) []byte { b[hostBridgeStAddress] |= 0x1; return b }, "CONFIG_ADDRESS 0x80001819 has read-only bits"},
		{"own-config", func(b []byte) []byte { b[hostBridgeStConfig+configStData] ^= 1; return b }, "slot 0: pci: config space state: vendor ID"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, "slot 0: pci: config space state: 321 bytes"},
		{"short", func(b []byte) []byte { return b[:8] }, "want at least 10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := mk()
			err := h.RestoreState(tc.mod(slices.Clone(st)))
			if !errors.Is(err, devices.ErrBadState) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "pci: host bridge state: ") {
				t.Fatalf("RestoreState error %v, want ErrBadState naming %q", err, tc.want)
			}
			if a := read(h, 0, 4); !bytes.Equal(a, []byte{0, 0, 0, 0}) {
				t.Errorf("a refused state set CONFIG_ADDRESS to %x", a)
			}
		})
	}
}
