package pci

import (
	"encoding/binary"
	"testing"
)

// fuzzDevice is a ConfigSpace with every kind of BAR and a few capabilities.
func fuzzDevice(t testing.TB) *ConfigSpace {
	cs := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1042, ClassCode: 0x010000, InterruptPin: 1})
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cs.AddBAR(0, BAR{Kind: BARIO, Size: 0x40}))
	must(cs.AddBAR(1, BAR{Kind: BARMem32, Size: 0x1000}))
	must(cs.AddBAR(2, BAR{Kind: BARMem64, Size: 0x4000}))
	must(cs.AddBAR(4, BAR{Kind: BARMem64, Size: 1 << 33, Prefetchable: true}))
	_, err := cs.AddCapability(Capability{ID: 0x09, Data: []byte{16, 1, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0}})
	must(err)
	_, err = cs.AddCapability(Capability{ID: 0x11, Data: []byte{0x07, 0, 0x02, 0, 0, 0, 0x03, 0x10, 0, 0},
		Writable: []byte{0, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0}})
	must(err)
	_, err = cs.AddCapability(Capability{ID: 0x09, Data: []byte{20, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		Writable: []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff}})
	must(err)
	return cs
}

// FuzzPCIConfig runs a guest's sequence of configuration accesses, through
// the host bridge's ports or straight at the ConfigSpace, and checks that
// nothing panics, read-only bits never change, write-1-to-clear bits never
// get set by the guest, and the BAR hook's view matches the registers.
//
// Each operation is 6 bytes: op, offset, then a little-endian dword value.
func FuzzPCIConfig(f *testing.F) {
	f.Add([]byte{0x00, 0x10, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{
		0x04, 0x00, 0x10, 0x08, 0x00, 0x80, // address register: 00.1 reg 0x10
		0x05, 0x00, 0xff, 0xff, 0xff, 0xff, // data dword: all ones
		0x02, 0x04, 0x07, 0x00, 0x00, 0x00, // command: decode on
		0x00, 0x18, 0x00, 0x00, 0x00, 0xc0,
	})
	f.Fuzz(func(t *testing.T, ops []byte) {
		cs := fuzzDevice(t)
		var before [ConfigSize]byte
		cs.ReadConfig(0, before[:])
		h := NewHostBridge(nil)
		if err := h.AddAt(1, cs); err != nil {
			t.Fatal(err)
		}
		var hooked [barCountStandard]BARMapping
		cs.OnBARChange(func(ch BARChange) {
			if ch.Old != hooked[ch.Index] && (ch.Old.Mapped || hooked[ch.Index].Mapped) {
				t.Errorf("BAR %d change from %+v, hook last saw %+v", ch.Index, ch.Old, hooked[ch.Index])
			}
			hooked[ch.Index] = ch.New
		})
		for len(ops) >= 6 {
			op, off := ops[0], int(ops[1])
			v := binary.LittleEndian.Uint32(ops[2:6])
			ops = ops[6:]
			n := 1 << (op & 3) // 1, 2, 4, 8
			buf := make([]byte, n)
			for i := range buf {
				buf[i] = byte(v >> (8 * (i % 4)))
			}
			switch op >> 2 & 3 {
			case 0: // direct write (may be unaligned or past the end)
				cs.WriteConfig(off, buf)
			case 1: // direct read
				cs.ReadConfig(off, buf)
			case 2: // port write at 0xcf8 + off%8
				h.Write(uint64(off%PortsSize), buf)
			case 3:
				h.Read(uint64(off%PortsSize), buf)
			}
		}
		var after [ConfigSize]byte
		cs.ReadConfig(0, after[:])
		for i := range after {
			ro := ^cs.wmask[i] &^ cs.w1c[i]
			if (after[i]^before[i])&ro != 0 {
				t.Errorf("read-only bits of byte %#x changed: %#02x -> %#02x (mask %#02x)", i, before[i], after[i], ro)
			}
			if after[i]&^before[i]&cs.w1c[i] != 0 {
				t.Errorf("write-1-to-clear bits of byte %#x set: %#02x -> %#02x", i, before[i], after[i])
			}
		}
		for i := range hooked {
			m := cs.BARMapping(i)
			if m.Mapped != hooked[i].Mapped || m.Mapped && m.Addr != hooked[i].Addr {
				t.Errorf("BAR %d maps %+v, hook last reported %+v", i, m, hooked[i])
			}
		}
	})
}
