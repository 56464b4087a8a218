package devices

import (
	"encoding/binary"
	"time"
)

// RTC state encoding, version 1 (little-endian):
//
//	0   "CMOS"
//	4   u16 version
//	6   index register (0–0x7f)
//	7   NMI mask bit of the last index write (0 or 1)
//	8   i64 nanoseconds the guest's clock is ahead of the host's
//	16  the 8 time registers as the guest wrote them while status B's SET
//	    bit was on: seconds, minutes, hours, weekday, day, month, year, century
//	24  the 128 bytes of CMOS RAM
const (
	rtcStateMagic   = "CMOS"
	rtcStateVersion = 1

	rtcStIndex  = 6
	rtcStNMI    = 7
	rtcStOffset = 8
	rtcStFrozen = 16
	rtcStRAM    = 24
	rtcStSize   = rtcStRAM + cmosSize

	rtcStateWhat = "devices: rtc"
)

// SaveState returns the RTC's state: CMOS RAM, the index register and how
// far the guest set its clock from the host's. The time itself is not
// saved: a restored RTC keeps following the host clock with the same
// offset, so a guest restored a day later reads a day later, as after a
// suspend on real hardware, and never a time from the past.
func (r *RTC) SaveState() ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := make([]byte, rtcStSize)
	copy(b, StateHeader(rtcStateMagic, rtcStateVersion))
	b[rtcStIndex] = r.index
	b[rtcStNMI] = boolByte(r.nmiMask)
	binary.LittleEndian.PutUint64(b[rtcStOffset:], uint64(r.offset))
	copy(b[rtcStFrozen:], r.frozen[:])
	copy(b[rtcStRAM:], r.ram[:])
	return b, nil
}

// RestoreState puts the RTC in a state SaveState returned (see SaveState
// for the time). Every value is checked; on error nothing changes.
func (r *RTC) RestoreState(data []byte) error {
	const what = rtcStateWhat
	if err := CheckStateHeader(what, data, rtcStateMagic, rtcStateVersion, rtcStSize); err != nil {
		return err
	}
	if len(data) != rtcStSize {
		return stateErr(what, "%d bytes, want %d", len(data), rtcStSize)
	}
	index := data[rtcStIndex]
	if index >= cmosSize {
		return stateErr(what, "index %#02x is past the %d bytes of CMOS RAM", index, cmosSize)
	}
	nmi, err := stateBool(what, "NMI mask", data[rtcStNMI])
	if err != nil {
		return err
	}
	ram := data[rtcStRAM:]
	if a := ram[cmosStatusA]; a&rtcAUIP != 0 {
		return stateErr(what, "status A %#02x has UIP set, which is never stored", a)
	}
	if b := ram[cmosStatusB]; b&rtcBSet != 0 && b&rtcBUIE != 0 {
		return stateErr(what, "status B %#02x has SET and UIE, which SET clears", b)
	}
	if c := ram[cmosStatusC]; c != 0 {
		return stateErr(what, "status C %#02x, want 0 (no interrupts)", c)
	}
	if d := ram[cmosStatusD]; d != rtcDVRT {
		return stateErr(what, "status D %#02x, want %#02x", d, rtcDVRT)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.index, r.nmiMask = index, nmi
	r.offset = time.Duration(binary.LittleEndian.Uint64(data[rtcStOffset:]))
	copy(r.frozen[:], data[rtcStFrozen:])
	copy(r.ram[:], ram)
	r.refresh()
	return nil
}
