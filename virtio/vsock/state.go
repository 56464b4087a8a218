package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Device state, for snapshots. Connections are not state: they end in
// this process (host sockets, goroutines) and cannot be carried into
// another, so a restored device drops them and tells the guest with
// TRANSPORT_RESET, as Firecracker does. Little-endian:
//
//	version u16 | guest CID u64
const (
	stVersion    = 0 // u16
	stCID        = 2 // u64 the CID the guest was given
	stStateSize  = 10
	StateVersion = 1 // the format SaveState writes and RestoreState reads
)

// ErrState is matched by every error RestoreState returns for bad state.
var ErrState = errors.New("vsock: bad device state")

// SaveState returns the device's state: the guest CID, for the record (the
// guest re-reads its CID after the TRANSPORT_RESET of a restore).
func (d *Device) SaveState() ([]byte, error) {
	b := make([]byte, stStateSize)
	binary.LittleEndian.PutUint16(b[stVersion:], StateVersion)
	binary.LittleEndian.PutUint64(b[stCID:], d.cid)
	return b, nil
}

// RestoreState checks data and, when the device is active (restored with
// its queues), arranges a transport reset for its first round after
// Resume: every connection is dropped (host sides see ErrReset, at once
// when the device is paused) and
// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET goes on the event queue (when the
// guest posts an event buffer, if none is posted). Pending host Dials
// fail with ErrReset.
func (d *Device) RestoreState(data []byte) error {
	if len(data) != stStateSize {
		return fmt.Errorf("%w: %d bytes (want %d)", ErrState, len(data), stStateSize)
	}
	if v := binary.LittleEndian.Uint16(data[stVersion:]); v != StateVersion {
		return fmt.Errorf("%w: version %d (this device reads %d)", ErrState, v, StateVersion)
	}
	if cid := binary.LittleEndian.Uint64(data[stCID:]); cid <= HostCID || cid > maxGuestCID {
		return fmt.Errorf("%w: guest CID %d outside 3..%d", ErrState, cid, uint64(maxGuestCID))
	}
	if !d.common.Active() {
		return nil // the guest's driver was not up: nothing to reset
	}
	if r := d.run.Load(); r != nil && d.common.Paused() {
		r.w.resetAll(ErrReset) // the loop is stopped: the host sides hear now
	}
	d.pmu.Lock()
	d.wantTReset = true
	dials := d.dials
	d.dials = nil
	d.pmu.Unlock()
	for _, c := range dials {
		c.mu.Lock()
		c.state = stateDone
		finishDialLocked(c, ErrReset)
		c.mu.Unlock()
	}
	return nil
}
