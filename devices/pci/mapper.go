package pci

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/internal/guestlog"
)

// BusMapper keeps a device's BAR regions on the VMM's buses where the guest
// has programmed them: give its Update method to ConfigSpace.OnBARChange.
// A region is on the bus exactly while its BAR decodes; when the guest
// programs a BAR over another device's range, the region is left off the
// bus until the guest moves it somewhere free; that is counted (Conflicts)
// and logged at most once a second.
type BusMapper struct {
	mu        sync.Mutex
	name      string
	mem, io   *devices.Bus
	regions   [barCountStandard]devices.Device
	at        [barCountStandard]uint64 // where each region is inserted
	placed    [barCountStandard]bool
	log       *slog.Logger
	guest     *guestlog.Logger // guest-caused conflicts, rate limited
	conflicts atomic.Uint64
}

// NewBusMapper returns a mapper for one PCI function. mem and io are the
// VMM's MMIO and port-I/O buses (io may be nil if there are no I/O BARs);
// regions[i] answers accesses to BAR i (nil for BARs with no region). name
// labels the bus entries ("virtio-net BAR 0"). log may be nil.
func NewBusMapper(name string, mem, io *devices.Bus, regions [6]devices.Device, log *slog.Logger) *BusMapper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BusMapper{name: name, mem: mem, io: io, regions: regions, log: log, guest: guestlog.New(log, nil)}
}

// Conflicts returns how many times the guest placed one of the function's
// BARs on a range already in use (the region was then left unmapped).
func (m *BusMapper) Conflicts() uint64 { return m.conflicts.Load() }

// Update moves BAR ch.Index's region to follow ch. It is the OnBARChange hook.
func (m *BusMapper) Update(ch BARChange) {
	i := ch.Index
	if i < 0 || i >= barCountStandard || m.regions[i] == nil {
		return
	}
	bus := m.mem
	if ch.BAR.Kind == BARIO {
		bus = m.io
	}
	if bus == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	want, addr := ch.New.Mapped, ch.New.Addr
	if m.placed[i] && want && m.at[i] == addr {
		return
	}
	if m.placed[i] && want {
		err := bus.Move(m.at[i], addr)
		if err == nil {
			m.at[i] = addr
			return
		}
		// Take it off the bus and insert it anew below, which counts and
		// logs a conflict once.
	}
	if m.placed[i] {
		if err := bus.Remove(m.at[i]); err != nil {
			m.log.Error("pci: removing BAR region", "device", m.name, "bar", i, "err", err)
		}
		m.placed[i] = false
	}
	if !want {
		return
	}
	label := fmt.Sprintf("%s BAR %d", m.name, i)
	if err := bus.Insert(addr, ch.BAR.Size, label, m.regions[i]); err != nil {
		m.conflicts.Add(1)
		m.guest.Warn("pci: guest placed a BAR on a used range; leaving it unmapped",
			"device", m.name, "bar", i, "addr", guestlog.Hex(addr), "err", err)
		return
	}
	m.at[i], m.placed[i] = addr, true
}
