package devices

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrBadState is wrapped by every RestoreState error about the saved state
// itself (wrong magic or version, bad length, a value the device cannot
// hold): the snapshot is corrupt or belongs to another device or machine.
var ErrBadState = errors.New("bad device state")

// Every device state encoding starts with a 4-byte magic naming the device
// and a little-endian uint16 format version; the device's fields follow at
// the offsets its file names.
const (
	stateMagicOff   = 0
	stateVersionOff = 4
	stateHeaderSize = 6
)

// StateHeader returns the common header of a device state encoding: magic
// (exactly 4 bytes) and version. Device packages outside devices (pci) use
// it so all encodings look alike.
func StateHeader(magic string, version uint16) []byte {
	b := make([]byte, stateHeaderSize)
	copy(b[stateMagicOff:], magic)
	binary.LittleEndian.PutUint16(b[stateVersionOff:], version)
	return b
}

// CheckStateHeader checks data's magic and version and that it is at least
// minLen bytes long; what names the device in the error ("serial").
func CheckStateHeader(what string, data []byte, magic string, version uint16, minLen int) error {
	if len(data) < stateHeaderSize {
		return fmt.Errorf("%s state: %d bytes, too short for a header: %w", what, len(data), ErrBadState)
	}
	if m := string(data[stateMagicOff : stateMagicOff+4]); m != magic {
		return fmt.Errorf("%s state: magic %q, want %q: %w", what, m, magic, ErrBadState)
	}
	if v := binary.LittleEndian.Uint16(data[stateVersionOff:]); v != version {
		return fmt.Errorf("%s state: format version %d, this build reads %d: %w", what, v, version, ErrBadState)
	}
	if len(data) < minLen {
		return fmt.Errorf("%s state: %d bytes, want at least %d: %w", what, len(data), minLen, ErrBadState)
	}
	return nil
}

// stateErr formats a RestoreState error about one field.
func stateErr(what, format string, args ...any) error {
	return fmt.Errorf("%s state: %s: %w", what, fmt.Sprintf(format, args...), ErrBadState)
}

// stateBool decodes a flag byte that must be 0 or 1.
func stateBool(what, field string, v byte) (bool, error) {
	switch v {
	case 0:
		return false, nil
	case 1:
		return true, nil
	}
	return false, stateErr(what, "%s %#x is not 0 or 1", field, v)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}
