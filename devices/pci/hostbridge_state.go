package pci

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/devices"
)

// HostBridge state encoding, version 1 (little-endian):
//
//	0   "PCHB"
//	4   u16 version
//	6   u32 CONFIG_ADDRESS
//	10  the host bridge's own configuration space (slot 0), as
//	    ConfigSpace.SaveState encodes it
const (
	hostBridgeStateMagic   = "PCHB"
	hostBridgeStateVersion = 1

	hostBridgeStAddress = 6
	hostBridgeStConfig  = 10
	hostBridgeStSize    = hostBridgeStConfig + configStSize

	hostBridgeStateWhat = "pci: host bridge"
)

// SaveState returns the CONFIG_ADDRESS latch and the bridge's own
// configuration space. The endpoints in the other slots are saved by
// their owners.
func (h *HostBridge) SaveState() ([]byte, error) {
	cs, err := h.ownConfig()
	if err != nil {
		return nil, err
	}
	own, err := cs.SaveState()
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	addr := h.address
	h.mu.Unlock()
	b := devices.StateHeader(hostBridgeStateMagic, hostBridgeStateVersion)
	b = binary.LittleEndian.AppendUint32(b, addr)
	return append(b, own...), nil
}

// RestoreState loads what SaveState returned. Every value is checked; on
// error nothing changes.
func (h *HostBridge) RestoreState(data []byte) error {
	const what = hostBridgeStateWhat
	if err := devices.CheckStateHeader(what, data, hostBridgeStateMagic, hostBridgeStateVersion, hostBridgeStConfig); err != nil {
		return err
	}
	addr := binary.LittleEndian.Uint32(data[hostBridgeStAddress:])
	if addr&^addrWritable != 0 {
		return fmt.Errorf("%s state: CONFIG_ADDRESS %#08x has read-only bits set (writable %#08x): %w", what, addr, uint32(addrWritable), devices.ErrBadState)
	}
	cs, err := h.ownConfig()
	if err != nil {
		return err
	}
	// The nested state checks its own length, so a truncated or padded
	// bridge state fails there.
	if err := cs.RestoreState(data[hostBridgeStConfig:]); err != nil {
		return fmt.Errorf("%s state: slot 0: %w", what, err)
	}
	h.mu.Lock()
	h.address = addr
	h.mu.Unlock()
	return nil
}

// ownConfig is the bridge's configuration space at slot 0.
func (h *HostBridge) ownConfig() (*ConfigSpace, error) {
	cs, ok := h.Device(0).(*ConfigSpace)
	if !ok {
		return nil, fmt.Errorf("%s: slot 0 is not the bridge's configuration space", hostBridgeStateWhat)
	}
	return cs, nil
}
