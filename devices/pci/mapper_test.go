package pci

import (
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog/guestlogtest"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/internal/guestlog"
)

// A guest that keeps putting a BAR on used ranges is counted exactly and
// logged once (the clock does not move), not once per write.
func TestBusMapperConflictFlood(t *testing.T) {
	var mem devices.Bus
	for _, a := range []uint64{0xd000_0000, 0xd000_2000} {
		if err := mem.Insert(a, 0x1000, "other", region{9}); err != nil {
			t.Fatal(err)
		}
	}
	dev := NewConfigSpace(Header{VendorID: 1})
	dev.AddBAR(0, BAR{Kind: BARMem32, Size: 0x1000})
	h := &guestlogtest.Warnings{}
	m := NewBusMapper("test", &mem, nil, [6]devices.Device{region{1}}, slog.New(h))
	stopped := time.Unix(1000, 0)
	m.guest = guestlog.New(slog.New(h), func() time.Time { return stopped })
	dev.OnBARChange(m.Update)
	dev.SetCommand(CommandMemory)
	setBAR := func(a uint32) {
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], a)
		dev.WriteConfig(0x10, b[:])
	}
	setBAR(0xe000_0000)
	if m.Conflicts() != 0 {
		t.Fatalf("%d conflicts for a free range", m.Conflicts())
	}
	const n = 10000
	for i := range n {
		setBAR(0xd000_0000 + uint32(i%2)*0x2000) // alternate, so every write is a change
	}
	if got := m.Conflicts(); got != n {
		t.Fatalf("Conflicts() = %d after %d bad placements; want %d", got, n, n)
	}
	if h.Count() != 1 {
		t.Fatalf("%d warnings for %d bad placements within one second; want 1", h.Count(), n)
	}
	// A free range maps it again and is not a conflict.
	setBAR(0xe000_0000)
	b := []byte{0}
	if !mem.Read(0xe000_0000, b) || b[0] != 1 || m.Conflicts() != n {
		t.Fatalf("BAR0 not remapped (conflicts %d): %v", m.Conflicts(), mem.Ranges())
	}
}
