package virtionet

import (
	"encoding/binary"
	"errors"
	"fmt"
	stdnet "net"

	"github.com/corral-vmm/corral/virtio"
)

// Device state, for snapshots (SaveState/RestoreState): the guest's MAC
// and the frame handler's state (the DHCP server's lease table) when the
// handler is a virtio.Stateful. The backend (TAP) is not state: the VMM
// opens a fresh one for the restored device. Little-endian:
//
//	version u16 | MAC [6]byte | handler state length u32 | handler state
const (
	stVersion    = 0  // u16
	stMAC        = 2  // [6]byte
	stHandlerLen = 8  // u32
	stHeaderSize = 12 // the handler state follows

	// StateVersion is the format SaveState writes and RestoreState reads.
	StateVersion = 1
)

// ErrState is matched by every error RestoreState returns.
var ErrState = errors.New("virtio-net: bad device state")

// SaveState returns the device's own state: its MAC and, when the frame
// handler is a virtio.Stateful (*dhcp.Server), the handler's state.
func (d *Device) SaveState() ([]byte, error) {
	var hs []byte
	if s, ok := d.handler.(virtio.Stateful); ok {
		var err error
		if hs, err = s.SaveState(); err != nil {
			return nil, fmt.Errorf("virtio-net: state: frame handler: %w", err)
		}
	}
	b := make([]byte, stHeaderSize, stHeaderSize+len(hs))
	binary.LittleEndian.PutUint16(b[stVersion:], StateVersion)
	copy(b[stMAC:], d.mac[:])
	binary.LittleEndian.PutUint32(b[stHandlerLen:], uint32(len(hs)))
	return append(b, hs...), nil
}

// RestoreState takes the MAC (the guest's driver already uses it, whatever
// the configuration says now) and the frame handler's state from data,
// which SaveState wrote. Call it on a fresh device before the guest runs.
// Errors match ErrState.
func (d *Device) RestoreState(data []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrState, fmt.Sprintf(format, args...))
	}
	le := binary.LittleEndian
	if len(data) < stHeaderSize {
		return bad("%d bytes, shorter than the %d-byte header", len(data), stHeaderSize)
	}
	if v := le.Uint16(data[stVersion:]); v != StateVersion {
		return bad("version %d (this device reads %d)", v, StateVersion)
	}
	mac := [6]byte(data[stMAC:])
	if mac[0]&1 != 0 || mac == ([6]byte{}) {
		return bad("MAC %v is not a unicast Ethernet address", stdnet.HardwareAddr(mac[:]))
	}
	n := le.Uint32(data[stHandlerLen:])
	if uint64(n) != uint64(len(data)-stHeaderSize) {
		return bad("frame handler state of %d bytes with %d left", n, len(data)-stHeaderSize)
	}
	if n > 0 {
		s, ok := d.handler.(virtio.Stateful)
		if !ok {
			return bad("frame handler state (DHCP leases) saved, but this device's frame handler keeps none")
		}
		if err := s.RestoreState(data[stHeaderSize:]); err != nil {
			return fmt.Errorf("%w: frame handler: %w", ErrState, err)
		}
	}
	d.mac = mac
	copy(d.config[cfgMAC:], mac[:])
	return nil
}
