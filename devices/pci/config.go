// Package pci emulates a PCI host bridge on configuration mechanism #1
// (I/O ports 0xCF8/0xCFC) with one bus, bus 0, and gives device models the
// pieces they need to appear on it.
//
// # How an endpoint plugs in
//
// An endpoint is anything implementing Device: the host bridge forwards the
// guest's configuration reads and writes for its slot to ReadConfig and
// WriteConfig. Most endpoints hold a *ConfigSpace, which implements Device
// itself and does the work of a standard type-0 header:
//
//	cs := pci.NewConfigSpace(pci.Header{VendorID: 0x1af4, DeviceID: 0x1041,
//		ClassCode: 0x020000, SubsystemVendorID: 0x1af4, SubsystemID: 1, InterruptPin: 1})
//	cs.AddBAR(0, pci.BAR{Kind: pci.BARMem64, Size: 0x4000})  // guest can size and move it
//	off, _ := cs.AddCapability(pci.Capability{ID: 0x09, Data: body, Writable: mask})
//	mapper := pci.NewBusMapper("virtio-net", mmioBus, nil, [6]devices.Device{0: bar0Region}, log)
//	cs.OnBARChange(mapper.Update)                             // keeps BAR regions on the MMIO bus
//	pci.AssignBARs(cs, memAlloc, nil)                         // firmware-style placement
//	cs.SetCommand(pci.CommandMemory)                          // optional: decode before the driver runs
//	slot, _ := hostBridge.Add(cs)                             // or an endpoint wrapping cs
//
// Interrupts are the endpoint's business: INTx through a devices.IRQLine the
// VMM gives it (with SetInterruptStatus for the status bit), MSI/MSI-X
// through whatever the VMM offers for KVM_SIGNAL_MSI, reading the message
// from its own capability registers.
//
// An endpoint that must react to configuration writes (an MSI-X enable bit,
// the virtio PCI configuration-access capability) wraps the ConfigSpace:
// its WriteConfig calls cs.WriteConfig, then looks at the registers it cares
// about with cs.Uint16 and friends. Registers the device itself changes are
// set with the Set* methods, which ignore the guest's writable masks.
//
// The device's BAR regions are ordinary devices.Device values. The VMM puts
// them on its MMIO (or I/O) devices.Bus wherever the BAR points while decode
// is enabled; BusMapper does exactly that from the OnBARChange hook.
//
// Guest configuration accesses are untrusted: offsets are bounded, and a
// guest write changes only the bits the per-byte writable mask allows (plus
// write-1-to-clear status bits). The guest can never change the IDs, the
// class, the capability list layout or the read-only bits of a capability.
package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"sync"
)

// ConfigSize is the size of conventional PCI configuration space.
const ConfigSize = 256

// Offsets of type-0 header registers.
const (
	VendorIDOffset      = 0x00
	DeviceIDOffset      = 0x02
	CommandOffset       = 0x04
	StatusOffset        = 0x06
	RevisionOffset      = 0x08
	ClassCodeOffset     = 0x09 // 3 bytes: prog-if, subclass, base class
	CacheLineOffset     = 0x0c
	LatencyTimerOffset  = 0x0d
	HeaderTypeOffset    = 0x0e
	BAR0Offset          = 0x10 // six dword BARs up to 0x27
	SubsystemVendorOff  = 0x2c
	SubsystemIDOffset   = 0x2e
	ExpansionROMOffset  = 0x30
	CapabilitiesOffset  = 0x34
	InterruptLineOffset = 0x3c
	InterruptPinOffset  = 0x3d

	// FirstCapabilityOffset is where AddCapability places the first capability.
	FirstCapabilityOffset = 0x40
)

// Command register bits.
const (
	CommandIO            = 1 << 0  // I/O space decode
	CommandMemory        = 1 << 1  // memory space decode
	CommandBusMaster     = 1 << 2  // device may DMA
	CommandParity        = 1 << 6  // parity error response
	CommandSERR          = 1 << 8  // SERR# enable
	CommandIntxDisable   = 1 << 10 // INTx assertion disabled
	commandWritable      = CommandIO | CommandMemory | CommandBusMaster | CommandParity | CommandSERR | CommandIntxDisable
	statusInterrupt      = 1 << 3 // INTx asserted (read-only, device-set)
	statusCapabilities   = 1 << 4 // capability list present (read-only)
	statusWrite1ToClear  = 0xf900 // parity, SERR, aborts: write 1 to clear
	barCountStandard     = 6
	maxCapabilityPayload = ConfigSize - FirstCapabilityOffset - 2
)

// Errors from building a configuration space.
var (
	// ErrBadBAR: the BAR index, kind or size is invalid, or the slot is taken.
	ErrBadBAR = errors.New("bad BAR")
	// ErrNoRoom: the capability does not fit in configuration space.
	ErrNoRoom = errors.New("no room in configuration space")
)

// Device is a PCI function on the host bridge's bus. The host bridge calls
// it for the guest's configuration accesses: offset+len(data) <= ConfigSize,
// len(data) is 1, 2 or 4 and offset is a multiple of len(data). ReadConfig
// fills all of data. Implementations do their own locking; data is
// little-endian, as the registers are.
type Device interface {
	ReadConfig(offset int, data []byte)
	WriteConfig(offset int, data []byte)
}

// Header holds the identity registers of a type-0 header.
type Header struct {
	VendorID, DeviceID uint16
	// ClassCode is base class<<16 | subclass<<8 | programming interface,
	// e.g. 0x060000 for a host bridge, 0x020000 for an Ethernet controller.
	ClassCode         uint32
	Revision          uint8
	SubsystemVendorID uint16
	SubsystemID       uint16
	// InterruptPin is 0 (none) or 1–4 for INTA#–INTD#.
	InterruptPin uint8
	// InterruptLine is the IRQ the firmware routed the pin to (guest-writable).
	InterruptLine uint8
}

// BARKind is the type of a base address register.
type BARKind uint8

// The kinds of BAR.
const (
	BARNone  BARKind = iota // not implemented: reads 0, sizes to 0
	BARIO                   // I/O space, 16-bit decode
	BARMem32                // memory space below 4 GiB
	BARMem64                // memory space, 64-bit: takes this index and the next
)

// String names the kind.
func (k BARKind) String() string {
	switch k {
	case BARNone:
		return "none"
	case BARIO:
		return "io"
	case BARMem32:
		return "mem32"
	case BARMem64:
		return "mem64"
	}
	return fmt.Sprintf("BARKind(%d)", uint8(k))
}

// BAR describes a base address register a device implements.
type BAR struct {
	Kind BARKind
	// Size is a power of two: 4–256 for I/O, at least 16 for memory (4096
	// or more is best: the guest maps pages), at most 2 GiB for BARMem32.
	Size         uint64
	Prefetchable bool // memory BARs only
}

// BARMapping is where a BAR decodes: Mapped is false while the command
// register disables its space, or while its address is 0 or the all-ones
// sizing pattern (or otherwise runs to the end of its address space).
type BARMapping struct {
	Addr   uint64
	Mapped bool
}

// BARChange reports that a BAR's mapping changed: it started or stopped
// decoding (command register, or an address that cannot decode) or moved
// while decoding. Address changes of a BAR that does not decode are not
// reported.
type BARChange struct {
	Index    int // 0–5; the lower index of a 64-bit BAR
	BAR      BAR
	Old, New BARMapping
}

// ConfigSpace is a 256-byte type-0 configuration space with per-byte
// writable masks, up to six BARs with sizing, and a capability list. It
// implements Device and is safe for concurrent use.
type ConfigSpace struct {
	// writeMu serialises mutations together with their hook calls, so hooks
	// see BAR changes in order. The hook runs without mu held, so it may
	// read the configuration space (but must not write it).
	writeMu sync.Mutex
	mu      sync.Mutex
	data    [ConfigSize]byte
	wmask   [ConfigSize]byte // bits the guest may write
	w1c     [ConfigSize]byte // bits the guest clears by writing 1
	bars    [barCountStandard]BAR
	hook    func(BARChange)
	capNext int // where the next capability goes
	capLast int // offset of the last capability, 0 when none
}

// NewConfigSpace returns a configuration space with the header h, no BARs
// and no capabilities. The command register starts at 0 (no decode).
func NewConfigSpace(h Header) *ConfigSpace {
	c := &ConfigSpace{capNext: FirstCapabilityOffset}
	le := binary.LittleEndian
	le.PutUint16(c.data[VendorIDOffset:], h.VendorID)
	le.PutUint16(c.data[DeviceIDOffset:], h.DeviceID)
	c.data[RevisionOffset] = h.Revision
	c.data[ClassCodeOffset] = uint8(h.ClassCode)
	c.data[ClassCodeOffset+1] = uint8(h.ClassCode >> 8)
	c.data[ClassCodeOffset+2] = uint8(h.ClassCode >> 16)
	c.data[HeaderTypeOffset] = 0x00 // type 0, single function
	le.PutUint16(c.data[SubsystemVendorOff:], h.SubsystemVendorID)
	le.PutUint16(c.data[SubsystemIDOffset:], h.SubsystemID)
	if h.InterruptPin <= 4 {
		c.data[InterruptPinOffset] = h.InterruptPin
	}
	c.data[InterruptLineOffset] = h.InterruptLine

	le.PutUint16(c.wmask[CommandOffset:], commandWritable)
	le.PutUint16(c.w1c[StatusOffset:], statusWrite1ToClear)
	c.wmask[CacheLineOffset] = 0xff
	c.wmask[InterruptLineOffset] = 0xff
	return c
}

// OnBARChange sets the function called after every change of a BAR's
// mapping, by the guest or by the Set* methods. It is called without the
// configuration space's lock held and serialised with other changes: it may
// read the configuration space but must not change it.
func (c *ConfigSpace) OnBARChange(hook func(BARChange)) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hook = hook
}

// AddBAR declares BAR index with the given kind and size. A BARMem64 also
// takes index+1. The BAR starts at address 0 (unmapped).
func (c *ConfigSpace) AddBAR(index int, b BAR) error {
	if err := checkBAR(index, b); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bars[index].Kind != BARNone || c.coveredByMem64(index) ||
		(b.Kind == BARMem64 && c.bars[index+1].Kind != BARNone) {
		return fmt.Errorf("pci: BAR %d is already in use: %w", index, ErrBadBAR)
	}
	c.bars[index] = b
	off := BAR0Offset + 4*index
	le := binary.LittleEndian
	mask := ^(b.Size - 1)
	switch b.Kind {
	case BARIO:
		le.PutUint32(c.data[off:], 0x1)
		le.PutUint32(c.wmask[off:], uint32(mask)&0xfffc)
	case BARMem32, BARMem64:
		flags := uint32(0)
		if b.Kind == BARMem64 {
			flags |= 0x4
		}
		if b.Prefetchable {
			flags |= 0x8
		}
		le.PutUint32(c.data[off:], flags)
		le.PutUint32(c.wmask[off:], uint32(mask)&0xfffffff0)
		if b.Kind == BARMem64 {
			le.PutUint32(c.data[off+4:], 0)
			le.PutUint32(c.wmask[off+4:], uint32(mask>>32))
		}
	}
	return nil
}

func checkBAR(index int, b BAR) error {
	last := barCountStandard - 1
	if b.Kind == BARMem64 {
		last--
	}
	if index < 0 || index > last {
		return fmt.Errorf("pci: BAR index %d for %v: %w", index, b.Kind, ErrBadBAR)
	}
	if b.Size == 0 || bits.OnesCount64(b.Size) != 1 {
		return fmt.Errorf("pci: BAR %d size %#x is not a power of two: %w", index, b.Size, ErrBadBAR)
	}
	switch b.Kind {
	case BARIO:
		if b.Size < 4 || b.Size > 256 || b.Prefetchable {
			return fmt.Errorf("pci: I/O BAR %d size %#x (want 4–256, not prefetchable): %w", index, b.Size, ErrBadBAR)
		}
	case BARMem32:
		if b.Size < 16 || b.Size > 1<<31 {
			return fmt.Errorf("pci: mem32 BAR %d size %#x (want 16 B–2 GiB): %w", index, b.Size, ErrBadBAR)
		}
	case BARMem64:
		if b.Size < 16 || b.Size > 1<<62 {
			return fmt.Errorf("pci: mem64 BAR %d size %#x (want 16 B–4 EiB): %w", index, b.Size, ErrBadBAR)
		}
	default:
		return fmt.Errorf("pci: BAR %d kind %v: %w", index, b.Kind, ErrBadBAR)
	}
	return nil
}

// coveredByMem64 reports whether index is the upper half of a 64-bit BAR.
func (c *ConfigSpace) coveredByMem64(index int) bool {
	return index > 0 && c.bars[index-1].Kind == BARMem64
}

// BAR returns the declaration of BAR index (Kind BARNone when there is none,
// including the upper half of a 64-bit BAR).
func (c *ConfigSpace) BAR(index int) BAR {
	if index < 0 || index >= barCountStandard {
		return BAR{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bars[index]
}

// BARAddress returns the address BAR index holds now, whether or not it
// decodes.
func (c *ConfigSpace) BARAddress(index int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.barAddr(index)
}

// BARMapping returns where BAR index decodes now.
func (c *ConfigSpace) BARMapping(index int) BARMapping {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mapping(index)
}

// barAddr reads the address of BAR index from the registers; mu held.
func (c *ConfigSpace) barAddr(index int) uint64 {
	if index < 0 || index >= barCountStandard {
		return 0
	}
	off := BAR0Offset + 4*index
	le := binary.LittleEndian
	lo := uint64(le.Uint32(c.data[off:]))
	switch c.bars[index].Kind {
	case BARIO:
		return lo &^ 0x3
	case BARMem32:
		return lo &^ 0xf
	case BARMem64:
		return uint64(le.Uint32(c.data[off+4:]))<<32 | lo&^0xf
	}
	return 0
}

// mapping computes where BAR index decodes; mu held.
func (c *ConfigSpace) mapping(index int) BARMapping {
	if index < 0 || index >= barCountStandard {
		return BARMapping{}
	}
	b := c.bars[index]
	addr := c.barAddr(index)
	cmd := binary.LittleEndian.Uint16(c.data[CommandOffset:])
	var enabled bool
	var limit uint64 // last address of the BAR's address space
	switch b.Kind {
	case BARIO:
		enabled, limit = cmd&CommandIO != 0, 0xffff
	case BARMem32:
		enabled, limit = cmd&CommandMemory != 0, 0xffff_ffff
	case BARMem64:
		enabled, limit = cmd&CommandMemory != 0, ^uint64(0)
	default:
		return BARMapping{}
	}
	last := addr + (b.Size - 1)
	// The all-ones sizing pattern ends exactly at the limit; so does any
	// wrap-around. Neither decodes (nor does address 0, which Linux uses for
	// "unassigned").
	mapped := enabled && addr != 0 && last >= addr && last < limit
	return BARMapping{Addr: addr, Mapped: mapped}
}

// SetBARAddress places BAR index at addr, as firmware would, ignoring the
// guest's masks. addr must be aligned to the BAR's size and fit its space.
// The OnBARChange hook runs if the mapping changes.
func (c *ConfigSpace) SetBARAddress(index int, addr uint64) error {
	var err error
	c.mutate(func() {
		if index < 0 || index >= barCountStandard || c.bars[index].Kind == BARNone {
			err = fmt.Errorf("pci: set address of BAR %d: not declared: %w", index, ErrBadBAR)
			return
		}
		b := c.bars[index]
		if addr&(b.Size-1) != 0 {
			err = fmt.Errorf("pci: BAR %d address %#x not aligned to size %#x: %w", index, addr, b.Size, ErrBadBAR)
			return
		}
		var limit uint64
		switch b.Kind {
		case BARIO:
			limit = 0xffff
		case BARMem32:
			limit = 0xffff_ffff
		default:
			limit = ^uint64(0)
		}
		if last := addr + (b.Size - 1); last < addr || last > limit {
			err = fmt.Errorf("pci: BAR %d address %#x size %#x outside its %v space: %w", index, addr, b.Size, b.Kind, ErrBadBAR)
			return
		}
		off := BAR0Offset + 4*index
		le := binary.LittleEndian
		flags := le.Uint32(c.data[off:]) & 0xf
		if b.Kind == BARIO {
			flags &= 0x3
		}
		le.PutUint32(c.data[off:], uint32(addr)|flags)
		if b.Kind == BARMem64 {
			le.PutUint32(c.data[off+4:], uint32(addr>>32))
		}
	})
	return err
}

// Capability is one entry for AddCapability.
type Capability struct {
	ID uint8 // capability ID, e.g. 0x05 MSI, 0x09 vendor-specific, 0x11 MSI-X
	// Data is the capability's bytes after the ID and next-pointer bytes.
	Data []byte
	// Writable is the guest-writable bit mask for Data, byte by byte; nil
	// makes the whole capability read-only. If set, len(Writable) == len(Data).
	Writable []byte
}

// AddCapability appends c to the capability list, at the next dword-aligned
// free offset from FirstCapabilityOffset, links it and sets the
// capabilities bit in the status register. It returns the capability's
// offset (where its ID byte is).
func (c *ConfigSpace) AddCapability(cp Capability) (int, error) {
	if cp.Writable != nil && len(cp.Writable) != len(cp.Data) {
		return 0, fmt.Errorf("pci: capability %#x: %d mask bytes for %d data bytes", cp.ID, len(cp.Writable), len(cp.Data))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	off := c.capNext
	if len(cp.Data) > maxCapabilityPayload || off+2+len(cp.Data) > ConfigSize {
		return 0, fmt.Errorf("pci: capability %#x of %d bytes at %#x: %w", cp.ID, 2+len(cp.Data), off, ErrNoRoom)
	}
	c.data[off] = cp.ID
	c.data[off+1] = 0 // end of list
	copy(c.data[off+2:], cp.Data)
	if cp.Writable != nil {
		copy(c.wmask[off+2:], cp.Writable)
	}
	if c.capLast == 0 {
		c.data[CapabilitiesOffset] = uint8(off)
	} else {
		c.data[c.capLast+1] = uint8(off)
	}
	c.capLast = off
	c.capNext = (off + 2 + len(cp.Data) + 3) &^ 3
	st := binary.LittleEndian.Uint16(c.data[StatusOffset:])
	binary.LittleEndian.PutUint16(c.data[StatusOffset:], st|statusCapabilities)
	return off, nil
}

// ReadConfig copies configuration space at offset into data; bytes past the
// end of configuration space read as 0xff. It implements Device.
func (c *ConfigSpace) ReadConfig(offset int, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		o := offset + i
		if offset < 0 || o < 0 || o >= ConfigSize {
			data[i] = 0xff
			continue
		}
		data[i] = c.data[o]
	}
}

// WriteConfig applies a guest write: only bits in the writable mask change,
// and write-1-to-clear bits clear where data has ones. Bytes outside
// configuration space are ignored. It implements Device; the OnBARChange
// hook runs if a BAR's mapping changed.
func (c *ConfigSpace) WriteConfig(offset int, data []byte) {
	if offset < 0 || offset >= ConfigSize {
		return
	}
	c.mutate(func() {
		for i, v := range data {
			o := offset + i
			if o >= ConfigSize {
				break
			}
			old := c.data[o]
			nv := old&^c.wmask[o] | v&c.wmask[o]
			nv &^= v & c.w1c[o]
			c.data[o] = nv
		}
	})
}

// mutate runs f with mu held and then reports BAR mapping changes to the
// hook, all under writeMu.
func (c *ConfigSpace) mutate(f func()) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	var before [barCountStandard]BARMapping
	for i := range before {
		before[i] = c.mapping(i)
	}
	f()
	var changes [barCountStandard]BARChange
	n := 0
	for i := range before {
		if m, o := c.mapping(i), before[i]; m.Mapped != o.Mapped || m.Mapped && m.Addr != o.Addr {
			changes[n] = BARChange{Index: i, BAR: c.bars[i], Old: before[i], New: m}
			n++
		}
	}
	hook := c.hook
	c.mu.Unlock()
	if hook == nil {
		return
	}
	for _, ch := range changes[:n] {
		hook(ch)
	}
}

// Uint8 returns the byte at offset (0 when out of range).
func (c *ConfigSpace) Uint8(offset int) uint8 {
	var b [1]byte
	c.readIn(offset, b[:])
	return b[0]
}

// Uint16 returns the little-endian word at offset (0 when out of range).
func (c *ConfigSpace) Uint16(offset int) uint16 {
	var b [2]byte
	c.readIn(offset, b[:])
	return binary.LittleEndian.Uint16(b[:])
}

// Uint32 returns the little-endian dword at offset (0 when out of range).
func (c *ConfigSpace) Uint32(offset int) uint32 {
	var b [4]byte
	c.readIn(offset, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// readIn copies config bytes into b when the whole range is in bounds.
func (c *ConfigSpace) readIn(offset int, b []byte) {
	if offset < 0 || offset > ConfigSize-len(b) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	copy(b, c.data[offset:])
}

// Command returns the command register.
func (c *ConfigSpace) Command() uint16 { return c.Uint16(CommandOffset) }

// SetUint8 sets the byte at offset from the device side, ignoring the
// guest's masks. Out-of-range offsets are ignored.
func (c *ConfigSpace) SetUint8(offset int, v uint8) { c.setBytes(offset, []byte{v}) }

// SetUint16 sets a little-endian word from the device side (see SetUint8).
func (c *ConfigSpace) SetUint16(offset int, v uint16) {
	c.setBytes(offset, binary.LittleEndian.AppendUint16(nil, v))
}

// SetUint32 sets a little-endian dword from the device side (see SetUint8).
func (c *ConfigSpace) SetUint32(offset int, v uint32) {
	c.setBytes(offset, binary.LittleEndian.AppendUint32(nil, v))
}

func (c *ConfigSpace) setBytes(offset int, b []byte) {
	if offset < 0 || offset > ConfigSize-len(b) {
		return
	}
	c.mutate(func() { copy(c.data[offset:], b) })
}

// SetWritable replaces the guest-writable masks for len(mask) bytes from
// offset, for device registers beyond what NewConfigSpace, AddBAR and
// AddCapability set up. Out-of-range bytes are ignored.
func (c *ConfigSpace) SetWritable(offset int, mask []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, m := range mask {
		if o := offset + i; offset >= 0 && o >= 0 && o < ConfigSize {
			c.wmask[o] = m
		}
	}
}

// SetCommand sets the command register from the device side, as firmware
// enabling decode would. The OnBARChange hook runs for BARs whose mapping
// changes.
func (c *ConfigSpace) SetCommand(v uint16) { c.SetUint16(CommandOffset, v) }

// SetInterruptStatus sets or clears the read-only Interrupt Status bit of
// the status register, which a device sets while it asserts INTx.
func (c *ConfigSpace) SetInterruptStatus(asserted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := binary.LittleEndian.Uint16(c.data[StatusOffset:])
	if asserted {
		st |= statusInterrupt
	} else {
		st &^= statusInterrupt
	}
	binary.LittleEndian.PutUint16(c.data[StatusOffset:], st)
}

var _ Device = (*ConfigSpace)(nil)
