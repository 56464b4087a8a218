package virtio9p

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// Device state, for snapshots. A 9P session is not state that can be
// saved: the guest's fids name host files open in this process (and the
// p9 server keeps them in its own table), so SaveState refuses while the
// guest holds any (ErrSessionOpen), and a restored device starts with no
// session: the restored guest mounts afresh (Tversion, Tattach). What is
// saved identifies the share, so a snapshot is not restored onto another
// one. Little-endian:
//
//	version u16 | flags u8 | tag length u8 | tag bytes
const (
	stVersion = 0 // u16
	stFlags   = 2 // u8 stFlag*
	stTagLen  = 3 // u8
	stTag     = 4 // [tag length]byte

	stFlagReadOnly = 1 // the tree refuses mutations (ReadOnlyer)
	stFlagsKnown   = stFlagReadOnly

	// StateVersion is the format SaveState writes and RestoreState reads.
	StateVersion = 1
)

// Errors of SaveState and RestoreState, for callers that branch.
var (
	// ErrSessionOpen is returned by SaveState (and RestoreState into a
	// used device) while the guest holds fids or is mounting the share.
	ErrSessionOpen = errors.New("9P session open")
	// ErrState is matched by every error RestoreState returns for state
	// that is corrupt or belongs to another share.
	ErrState = errors.New("bad virtio-9p device state")
)

// SaveState returns the device's state (tag and read-only flag) when the
// guest has no 9P session open: no fid attached and no mount under way.
// A guest that unmounted the share has none. The device must be paused
// or inactive.
func (d *Device) SaveState() ([]byte, error) {
	if d.common.Active() && !d.common.Paused() {
		return nil, fmt.Errorf("virtio-9p: share %q: state of a running device (pause it first)", d.tag)
	}
	if err := d.sessionErr(); err != nil {
		return nil, err
	}
	b := make([]byte, stTag+len(d.tag))
	binary.LittleEndian.PutUint16(b[stVersion:], StateVersion)
	if d.readOnly {
		b[stFlags] |= stFlagReadOnly
	}
	b[stTagLen] = uint8(len(d.tag)) // sharetag.MaxLen fits
	copy(b[stTag:], d.tag)
	return b, nil
}

// sessionErr says why the guest's 9P session on the device cannot be
// left behind, or nil.
func (d *Device) sessionErr() error {
	c := d.active.Load()
	if c == nil {
		return nil
	}
	fids, versionedOnly := c.session()
	switch {
	case fids > 0:
		s := "s"
		if fids == 1 {
			s = ""
		}
		return fmt.Errorf("virtio-9p: share %q: %w: the guest has %d open fid%s; unmount it before a snapshot (9P file handles cannot be carried into a snapshot)",
			d.tag, ErrSessionOpen, fids, s)
	case versionedOnly:
		return fmt.Errorf("virtio-9p: share %q: %w: the guest negotiated a 9P session (Tversion) and has not attached yet; let its mount finish and unmount it before a snapshot",
			d.tag, ErrSessionOpen)
	}
	return nil
}

// RestoreState checks saved state against the device: the same tag and
// read-only flag (an error names the field). Nothing else is restored:
// the device serves a fresh session from Resume on.
func (d *Device) RestoreState(data []byte) error {
	tag, ro, err := decodeState(data)
	if err != nil {
		return fmt.Errorf("virtio-9p: share %q: %w", d.tag, err)
	}
	if tag != d.tag {
		return fmt.Errorf("virtio-9p: share %q: %w: tag %q saved", d.tag, ErrState, tag)
	}
	if ro != d.readOnly {
		return fmt.Errorf("virtio-9p: share %q: %w: read-only %v saved, the share's is %v", d.tag, ErrState, ro, d.readOnly)
	}
	return d.sessionErr()
}

// decodeState parses SaveState's encoding.
func decodeState(data []byte) (tag string, readOnly bool, err error) {
	if len(data) < stTag {
		return "", false, fmt.Errorf("%w: %d bytes (want at least %d)", ErrState, len(data), stTag)
	}
	if v := binary.LittleEndian.Uint16(data[stVersion:]); v != StateVersion {
		return "", false, fmt.Errorf("%w: version %d (this device reads %d)", ErrState, v, StateVersion)
	}
	flags := data[stFlags]
	if flags&^stFlagsKnown != 0 {
		return "", false, fmt.Errorf("%w: flags %#x (known %#x)", ErrState, flags, stFlagsKnown)
	}
	if n := int(data[stTagLen]); len(data) != stTag+n {
		return "", false, fmt.Errorf("%w: tag length %d with %d bytes after the header", ErrState, n, len(data)-stTag)
	}
	tag = string(data[stTag:])
	if err := sharetag.Check(tag); err != nil {
		return "", false, fmt.Errorf("%w: tag: %v", ErrState, err)
	}
	return tag, flags&stFlagReadOnly != 0, nil
}
