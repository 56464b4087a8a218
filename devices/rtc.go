package devices

import (
	"sync"
	"time"
)

// I/O ports of the CMOS RTC: the index register (bit 7 masks NMIs) and the
// data register. Insert the RTC at RTCPort with size RTCPortsSize.
const (
	RTCPort      = 0x70
	RTCPortsSize = 2
)

// CMOS register indexes.
const (
	cmosSeconds  = 0x00
	cmosMinutes  = 0x02
	cmosHours    = 0x04
	cmosWeekday  = 0x06
	cmosDay      = 0x07
	cmosMonth    = 0x08
	cmosYear     = 0x09
	cmosStatusA  = 0x0a
	cmosStatusB  = 0x0b
	cmosStatusC  = 0x0c
	cmosStatusD  = 0x0d
	cmosCentury  = 0x32 // the register the FADT's CENTURY field names
	cmosBaseLo   = 0x15 // base memory in KiB
	cmosExtLo    = 0x17 // memory from 1 MiB in KiB (also at 0x30)
	cmosExtLo2   = 0x30
	cmosAbove16M = 0x34 // memory from 16 MiB in 64 KiB units
	cmosAbove4G  = 0x5b // memory from 4 GiB in 64 KiB units, 3 bytes
	cmosSize     = 128

	rtcAUIP     = 0x80 // status A: update in progress
	rtcADefault = 0x26 // 32.768 kHz time base, 1024 Hz periodic rate
	rtcBSet     = 0x80 // status B: updates halted while the guest sets the time
	rtcBUIE     = 0x10
	rtcBBinary  = 0x04 // data mode: binary, not BCD
	rtcB24h     = 0x02
	rtcBDefault = rtcB24h // BCD, 24-hour: what a PC BIOS leaves
	rtcDVRT     = 0x80    // status D: valid RAM and time (battery good)
	rtcHourPM   = 0x80    // 12-hour mode: PM flag in the hours register
)

// rtcFields holds the time registers' raw values: seconds, minutes, hours,
// weekday, day, month, year, century.
type rtcFields [8]byte

// rtcFieldIndex maps a CMOS index to its place in rtcFields, or -1.
func rtcFieldIndex(reg byte) int {
	switch reg {
	case cmosSeconds:
		return 0
	case cmosMinutes:
		return 1
	case cmosHours:
		return 2
	case cmosWeekday:
		return 3
	case cmosDay:
		return 4
	case cmosMonth:
		return 5
	case cmosYear:
		return 6
	case cmosCentury:
		return 7
	}
	return -1
}

// RTCConfig configures an RTC.
type RTCConfig struct {
	// Clock gives the current time (nil: time.Now). The guest reads it as
	// UTC. Only the guest sees the date; nothing else depends on it.
	Clock func() time.Time
	// LowRAM and HighRAM, if set, fill the CMOS memory-size bytes some
	// firmware reads: guest RAM below 4 GiB (from address 0) and above
	// 4 GiB, in bytes.
	LowRAM, HighRAM uint64
}

// RTC is the PC's MC146818-style CMOS real-time clock and its 128 bytes
// of CMOS RAM.
//
// The time registers show Clock's time plus an offset: a guest that sets
// the clock (writing time registers, with or without the SET bit of
// status B) changes the offset, never the host. Status B starts as a PC
// BIOS leaves it (24-hour, BCD); a guest that switches to binary or
// 12-hour mode reads the time in that mode from then on. Years are stored
// as year%100 with the century (BCD or binary) in register 0x32, so 2038,
// 2100 and 2106 encode like any other year (years from 10000 on wrap, and a
// guest time set more than ~290 years from the host clock saturates).
//
// Update-in-progress: UIP (status A bit 7) always reads 0. Instead, the
// time registers come from a snapshot of the clock taken when the guest
// reads the seconds register or status A (or when the snapshot is a second
// old), so a guest that reads seconds first — Linux, the UIP protocol,
// every BIOS — gets a consistent time however slowly it reads the other
// registers; one that reads across a second boundary in another order
// sees the same tearing a real RTC would show.
//
// Not emulated: interrupts (IRQ 8: periodic, alarm and update-ended; status
// C reads 0), alarms (the alarm registers are plain RAM), daylight saving,
// the divider chain (status A's other bits are stored only) and NMI masking
// (bit 7 of the index is stored; there are no NMIs to mask).
type RTC struct {
	mu      sync.Mutex
	clock   func() time.Time
	offset  time.Duration // guest time = clock() + offset
	snap    time.Time     // guest time the time registers show
	snapAt  time.Time     // host time the snapshot was taken
	frozen  rtcFields     // time registers while status B's SET bit is on
	index   byte
	nmiMask bool
	ram     [cmosSize]byte
}

// NewRTC returns an RTC showing cfg.Clock's time.
func NewRTC(cfg RTCConfig) *RTC {
	r := &RTC{clock: cfg.Clock}
	if r.clock == nil {
		r.clock = time.Now
	}
	r.ram[cmosStatusA] = rtcADefault
	r.ram[cmosStatusB] = rtcBDefault
	r.ram[cmosStatusD] = rtcDVRT
	r.setMemory(cfg.LowRAM, cfg.HighRAM)
	r.refresh()
	return r
}

// setMemory fills the memory-size bytes the way SeaBIOS and QEMU do.
func (r *RTC) setMemory(low, high uint64) {
	if low == 0 && high == 0 {
		return
	}
	put16 := func(off int, v uint64) {
		v = min(v, 0xffff)
		r.ram[off], r.ram[off+1] = byte(v), byte(v>>8)
	}
	put16(cmosBaseLo, 640)
	if low > 1<<20 {
		put16(cmosExtLo, (low-1<<20)>>10)
		put16(cmosExtLo2, (low-1<<20)>>10)
	}
	if low > 16<<20 {
		put16(cmosAbove16M, (low-16<<20)>>16)
	}
	h := min(high>>16, 0xffffff)
	r.ram[cmosAbove4G], r.ram[cmosAbove4G+1], r.ram[cmosAbove4G+2] = byte(h), byte(h>>8), byte(h>>16)
}

// NMIMasked reports whether the guest last wrote the index port with bit 7
// set (NMIs disabled). Nothing in the machine raises NMIs through it.
func (r *RTC) NMIMasked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nmiMask
}

// Read handles a guest read at offset 0 (index: reads 0xff, write-only on
// a PC) or 1 (data). Bytes of wider accesses past offset 1 read 0xff.
func (r *RTC) Read(offset uint64, data []byte) {
	fill(data, 0xff)
	for i := range data {
		if offset+uint64(i) == 1 {
			data[i] = r.readData()
		}
	}
}

// Write handles a guest write at offset 0 (index, bit 7 = NMI mask) or 1
// (data), byte by byte for wider accesses.
func (r *RTC) Write(offset uint64, data []byte) {
	for i, v := range data {
		switch offset + uint64(i) {
		case 0:
			r.mu.Lock()
			r.index, r.nmiMask = v&0x7f, v&0x80 != 0
			r.mu.Unlock()
		case 1:
			r.writeData(v)
		}
	}
}

// refresh takes a new snapshot of the guest's time; mu held.
func (r *RTC) refresh() {
	now := r.clock()
	r.snapAt = now
	r.snap = now.Add(r.offset).UTC().Truncate(time.Second)
}

func (r *RTC) readData() byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := r.index
	switch idx {
	case cmosStatusA:
		r.refresh()
		return r.ram[cmosStatusA] &^ rtcAUIP
	case cmosStatusC:
		return 0 // no interrupt flags: no IRQ 8
	case cmosStatusD:
		return rtcDVRT
	}
	f := rtcFieldIndex(idx)
	if f < 0 {
		return r.ram[idx]
	}
	if r.ram[cmosStatusB]&rtcBSet != 0 {
		return r.frozen[f]
	}
	if now := r.clock(); idx == cmosSeconds || now.Sub(r.snapAt) >= time.Second || now.Before(r.snapAt) {
		r.refresh()
	}
	return r.encode(r.snap)[f]
}

func (r *RTC) writeData(v byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	idx := r.index
	switch idx {
	case cmosStatusA:
		r.ram[cmosStatusA] = v &^ rtcAUIP
		return
	case cmosStatusB:
		r.writeStatusB(v)
		return
	case cmosStatusC, cmosStatusD:
		return // read-only
	}
	f := rtcFieldIndex(idx)
	if f < 0 {
		r.ram[idx] = v
		return
	}
	if r.ram[cmosStatusB]&rtcBSet != 0 {
		r.frozen[f] = v // takes effect when SET is cleared
		return
	}
	// Setting one field while the clock runs: the time moves to the
	// current time with that field replaced.
	r.refresh()
	fields := r.encode(r.snap)
	fields[f] = v
	r.setTime(r.decode(fields))
}

func (r *RTC) writeStatusB(v byte) {
	old := r.ram[cmosStatusB]
	if v&rtcBSet != 0 {
		v &^= rtcBUIE // setting SET clears the update-ended interrupt enable
	}
	switch {
	case old&rtcBSet == 0 && v&rtcBSet != 0:
		// Updates stop: the registers hold the time as it is now, in the
		// old mode, and the guest overwrites them.
		r.refresh()
		r.frozen = r.encode(r.snap)
		r.ram[cmosStatusB] = v
	case old&rtcBSet != 0 && v&rtcBSet == 0:
		// Updates resume from what the guest wrote, read in the new mode.
		r.ram[cmosStatusB] = v
		r.setTime(r.decode(r.frozen))
	default:
		r.ram[cmosStatusB] = v
	}
}

// setTime makes the guest's clock read t now; mu held.
func (r *RTC) setTime(t time.Time) {
	r.offset = t.Sub(r.clock())
	r.refresh()
}

// encode renders t as the time registers in the current data mode.
func (r *RTC) encode(t time.Time) rtcFields {
	b := r.ram[cmosStatusB]
	enc := func(v int) byte {
		v %= 100
		if v < 0 {
			v += 100
		}
		if b&rtcBBinary != 0 {
			return byte(v)
		}
		return byte(v/10<<4 | v%10)
	}
	hour := enc(t.Hour())
	if b&rtcB24h == 0 {
		h := t.Hour() % 12
		if h == 0 {
			h = 12
		}
		hour = enc(h)
		if t.Hour() >= 12 {
			hour |= rtcHourPM
		}
	}
	year := t.Year()
	return rtcFields{
		enc(t.Second()), enc(t.Minute()), hour,
		enc(int(t.Weekday()) + 1), // 1 = Sunday
		enc(t.Day()), enc(int(t.Month())), enc(year % 100), enc(year / 100),
	}
}

// decode reads time registers written by the guest in the current mode.
// Out-of-range values are the guest's business: they normalise the way
// time.Date does (month 13 is January of the next year) and never fail.
func (r *RTC) decode(f rtcFields) time.Time {
	b := r.ram[cmosStatusB]
	dec := func(v byte) int {
		if b&rtcBBinary != 0 {
			return int(v)
		}
		return int(v>>4)*10 + int(v&0x0f)
	}
	hour := dec(f[2] &^ rtcHourPM)
	if b&rtcB24h == 0 {
		hour %= 12
		if f[2]&rtcHourPM != 0 {
			hour += 12
		}
	} else {
		hour = dec(f[2])
	}
	year := dec(f[7])*100 + dec(f[6])
	return time.Date(year, time.Month(dec(f[5])), dec(f[4]), hour, dec(f[1]), dec(f[0]), 0, time.UTC)
}
