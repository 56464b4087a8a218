package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// I/O ports of configuration mechanism #1. Insert the HostBridge on the
// I/O bus at ConfigAddressPort with size PortsSize.
const (
	ConfigAddressPort = 0xcf8 // dword CONFIG_ADDRESS register
	ResetControlPort  = 0xcf9 // byte reset control register (PIIX/ICH)
	ConfigDataPort    = 0xcfc // CONFIG_DATA window, 0xcfc–0xcff
	PortsSize         = 8
)

// The host bridge's own identity at 00.0. 8086:0d57 is the ID Firecracker's
// PCI host bridge uses; no Linux driver or quirk binds to it, so the guest
// sees a plain class 0x0600 host bridge.
const (
	HostBridgeVendorID  = 0x8086
	HostBridgeDeviceID  = 0x0d57
	HostBridgeClassCode = 0x060000
)

// MaxSlot is the highest device number on the bus; slot 0 is the host bridge.
const MaxSlot = 31

// ErrNoSlot: the slot is out of range or taken, or the bus is full.
var ErrNoSlot = errors.New("no free PCI slot")

const (
	addrEnable   = 1 << 31
	addrWritable = 0x8fff_fffc // enable, extended register, bus, device, function, register; bits 30:28 and 1:0 read 0
	addrExtReg   = 0x0f00_0000 // bits 27:24: register bits 11:8 (AMD's extended configuration access)
	resetCPU     = 1 << 2      // 0xcf9 bit 2: RST_CPU
)

// HostBridge is bus 0's host bridge on configuration mechanism #1: the
// CONFIG_ADDRESS register at 0xcf8 (dword accesses only), the data window
// at 0xcfc–0xcff (byte, word and dword accesses at their natural
// sub-offsets) and the reset control register at 0xcf9 (byte accesses).
// It implements devices.Device for the I/O bus.
//
// Only bus 0, function 0 of each slot exists: everything else, and any
// access while the enable bit is clear, reads all ones and ignores writes.
// Unaligned data-window accesses (a word at 0xcfd, a dword at 0xcfe) read
// all ones and are ignored. Registers past 255 (AMD's extended register
// bits 27:24 set) do not exist: conventional configuration space only.
type HostBridge struct {
	mu      sync.Mutex
	address uint32
	slots   [MaxSlot + 1]Device
	reset   func()
}

// NewHostBridge returns a host bridge whose own configuration space sits at
// slot 0 (8086:0d57, class 0x060000). reset, if not nil, is called when the
// guest writes RST_CPU (bit 2) to port 0xcf9; nil ignores such writes.
func NewHostBridge(reset func()) *HostBridge {
	h := &HostBridge{reset: reset}
	h.slots[0] = NewConfigSpace(Header{
		VendorID:  HostBridgeVendorID,
		DeviceID:  HostBridgeDeviceID,
		ClassCode: HostBridgeClassCode,
	})
	return h
}

// Add places d at the lowest free slot from 1 and returns the slot.
func (h *HostBridge) Add(d Device) (int, error) {
	if d == nil {
		return 0, errors.New("pci: add nil device")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := 1; s <= MaxSlot; s++ {
		if h.slots[s] == nil {
			h.slots[s] = d
			return s, nil
		}
	}
	return 0, fmt.Errorf("pci: all %d slots used: %w", MaxSlot, ErrNoSlot)
}

// AddAt places d at slot (1–31).
func (h *HostBridge) AddAt(slot int, d Device) error {
	if d == nil {
		return errors.New("pci: add nil device")
	}
	if slot < 1 || slot > MaxSlot {
		return fmt.Errorf("pci: slot %d outside 1–%d: %w", slot, MaxSlot, ErrNoSlot)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.slots[slot] != nil {
		return fmt.Errorf("pci: slot %d taken: %w", slot, ErrNoSlot)
	}
	h.slots[slot] = d
	return nil
}

// Device returns the device at slot, or nil.
func (h *HostBridge) Device(slot int) Device {
	if slot < 0 || slot > MaxSlot {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.slots[slot]
}

// target decodes CONFIG_ADDRESS: the device addressed and the register's
// dword offset, or nil when nothing answers.
func (h *HostBridge) target() (Device, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	a := h.address
	if a&addrEnable == 0 {
		return nil, 0
	}
	bus := (a >> 16) & 0xff
	slot := (a >> 11) & 0x1f
	fn := (a >> 8) & 0x7
	if bus != 0 || fn != 0 || a&addrExtReg != 0 {
		return nil, 0
	}
	return h.slots[slot], int(a & 0xfc)
}

// dataAccess maps an access at data-window offset off (0–3) of n bytes to a
// device and config offset; ok is false when nothing should answer.
func (h *HostBridge) dataAccess(off uint64, n int) (Device, int, bool) {
	if n != 1 && n != 2 && n != 4 {
		return nil, 0, false
	}
	if off%uint64(n) != 0 || off+uint64(n) > 4 {
		return nil, 0, false
	}
	d, reg := h.target()
	if d == nil {
		return nil, 0, false
	}
	return d, reg + int(off), true
}

// Read handles a guest read at offset from ConfigAddressPort.
func (h *HostBridge) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0xff
	}
	switch {
	case offset == 0 && len(data) == 4:
		h.mu.Lock()
		binary.LittleEndian.PutUint32(data, h.address)
		h.mu.Unlock()
	case offset == 1 && len(data) == 1:
		data[0] = 0 // reset control reads back 0: nothing latched
	case offset >= 4 && offset < PortsSize:
		if d, reg, ok := h.dataAccess(offset-4, len(data)); ok {
			d.ReadConfig(reg, data)
		}
	}
}

// Write handles a guest write at offset from ConfigAddressPort.
func (h *HostBridge) Write(offset uint64, data []byte) {
	switch {
	case offset == 0 && len(data) == 4:
		h.mu.Lock()
		h.address = binary.LittleEndian.Uint32(data) & addrWritable
		h.mu.Unlock()
	case offset == 1 && len(data) == 1:
		if data[0]&resetCPU != 0 && h.reset != nil {
			h.reset()
		}
	case offset >= 4 && offset < PortsSize:
		if d, reg, ok := h.dataAccess(offset-4, len(data)); ok {
			d.WriteConfig(reg, data)
		}
	}
}
