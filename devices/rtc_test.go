package devices

import (
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock; step is added after every reading.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type cmos struct {
	t *testing.T
	r *RTC
}

func (c cmos) read(idx byte) byte {
	c.r.Write(0, []byte{idx})
	b := []byte{0}
	c.r.Read(1, b)
	return b[0]
}

func (c cmos) write(idx, v byte) {
	c.r.Write(0, []byte{idx})
	c.r.Write(1, []byte{v})
}

func newCMOS(t *testing.T, at time.Time) (cmos, *fakeClock) {
	clk := &fakeClock{t: at}
	return cmos{t: t, r: NewRTC(RTCConfig{Clock: clk.now})}, clk
}

// timeRegs reads the registers in Linux's mc146818_get_time order.
func (c cmos) timeRegs() rtcFields {
	var f rtcFields
	f[0] = c.read(cmosSeconds)
	f[1] = c.read(cmosMinutes)
	f[2] = c.read(cmosHours)
	f[3] = c.read(cmosWeekday)
	f[4] = c.read(cmosDay)
	f[5] = c.read(cmosMonth)
	f[6] = c.read(cmosYear)
	f[7] = c.read(cmosCentury)
	return f
}

func TestRTCBCDDefault(t *testing.T) {
	c, _ := newCMOS(t, time.Date(2024, 2, 29, 13, 45, 56, 0, time.UTC)) // a Thursday
	want := rtcFields{0x56, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24, 0x20}
	if got := c.timeRegs(); got != want {
		t.Errorf("BCD registers % x, want % x", got, want)
	}
	if b := c.read(cmosStatusB); b != 0x02 {
		t.Errorf("status B %#x, want 0x02 (24h, BCD)", b)
	}
	if d := c.read(cmosStatusD); d != 0x80 {
		t.Errorf("status D %#x", d)
	}
	if a := c.read(cmosStatusA); a&rtcAUIP != 0 || a != rtcADefault {
		t.Errorf("status A %#x", a)
	}
	c.write(cmosStatusA, 0xff)
	if a := c.read(cmosStatusA); a != 0x7f {
		t.Errorf("status A after writing 0xff: %#x (UIP must stay read-only)", a)
	}
	c.write(cmosStatusC, 0xff)
	c.write(cmosStatusD, 0x00)
	if c.read(cmosStatusC) != 0 || c.read(cmosStatusD) != 0x80 {
		t.Error("status C/D writable")
	}
}

func TestRTCModes(t *testing.T) {
	c, _ := newCMOS(t, time.Date(2024, 2, 29, 13, 45, 56, 0, time.UTC))
	c.write(cmosStatusB, rtcB24h|rtcBBinary)
	if got, want := c.timeRegs(), (rtcFields{56, 45, 13, 5, 29, 2, 24, 20}); got != want {
		t.Errorf("binary % x, want % x", got, want)
	}
	for _, x := range []struct {
		hour int
		mode byte
		want byte
	}{
		{13, 0, 0x81}, {0, 0, 0x12}, {12, 0, 0x92}, {11, 0, 0x11}, {23, 0, 0x91},
		{13, rtcBBinary, 0x81}, {0, rtcBBinary, 12}, {12, rtcBBinary, 0x8c}, {22, rtcBBinary, 0x8a},
	} {
		c, _ := newCMOS(t, time.Date(2024, 1, 1, x.hour, 0, 0, 0, time.UTC))
		c.write(cmosStatusB, x.mode)
		if got := c.read(cmosHours); got != x.want {
			t.Errorf("hour %d mode %#x: %#x, want %#x", x.hour, x.mode, got, x.want)
		}
	}
}

func TestRTCYears(t *testing.T) {
	for _, x := range []struct {
		t    time.Time
		want rtcFields
	}{
		{time.Date(2038, 1, 19, 3, 14, 8, 0, time.UTC), rtcFields{0x08, 0x14, 0x03, 0x03, 0x19, 0x01, 0x38, 0x20}},
		{time.Date(2100, 3, 1, 0, 0, 0, 0, time.UTC), rtcFields{0, 0, 0, 0x02, 0x01, 0x03, 0x00, 0x21}},
		{time.Date(2106, 2, 7, 6, 28, 16, 0, time.UTC), rtcFields{0x16, 0x28, 0x06, 0x01, 0x07, 0x02, 0x06, 0x21}},
		{time.Date(1999, 12, 31, 23, 59, 59, 0, time.UTC), rtcFields{0x59, 0x59, 0x23, 0x06, 0x31, 0x12, 0x99, 0x19}},
	} {
		c, _ := newCMOS(t, x.t)
		if got := c.timeRegs(); got != x.want {
			t.Errorf("%v: % x, want % x", x.t, got, x.want)
		}
	}
	// The clock's zone does not matter: the guest reads UTC.
	c, _ := newCMOS(t, time.Date(2100, 1, 1, 1, 0, 0, 0, time.FixedZone("X", 5*3600)))
	if got := c.timeRegs(); got[6] != 0x99 || got[7] != 0x20 || got[2] != 0x20 {
		t.Errorf("zoned clock: % x, want 2099-12-31 20:00 UTC", got)
	}
}

// TestRTCConsistentRead reads the time the way Linux does while the clock
// crosses a century boundary between register reads.
func TestRTCConsistentRead(t *testing.T) {
	start := time.Date(2099, 12, 31, 23, 59, 59, 0, time.UTC)
	for offset := time.Duration(0); offset < time.Second; offset += 50 * time.Millisecond {
		c, clk := newCMOS(t, start.Add(offset))
		clk.step = 50 * time.Millisecond
		var f rtcFields
		for tries := 0; ; tries++ {
			if tries > 10 {
				t.Fatal("no stable read")
			}
			sec := c.read(cmosSeconds)
			if c.read(cmosStatusA)&rtcAUIP != 0 {
				continue
			}
			if c.read(cmosSeconds) != sec {
				continue
			}
			f = c.timeRegs()
			if c.read(cmosSeconds) != sec {
				continue
			}
			break
		}
		// A torn read decodes far from the truth (a year or a minute off).
		got := c.r.decode(f)
		if lo, hi := start, start.Add(5*time.Second); got.Before(lo) || got.After(hi) {
			t.Errorf("offset %v: torn read % x = %v", offset, f, got)
		}
		if wd := byte(got.Weekday()) + 1; f[3] != wd {
			t.Errorf("offset %v: weekday %d for %v", offset, f[3], got)
		}
	}
	// Registers read without seconds first still do not go stale.
	c, clk := newCMOS(t, start)
	c.read(cmosMinutes)
	clk.advance(2 * time.Second)
	if got := c.read(cmosMinutes); got != 0x00 {
		t.Errorf("minutes 2s later %#x, want 0x00", got)
	}
}

func TestRTCGuestSetsTime(t *testing.T) {
	host := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	c, clk := newCMOS(t, host)
	// As Linux's mc146818_set_time: SET, write fields in BCD, clear SET.
	c.write(cmosStatusB, c.read(cmosStatusB)|rtcBSet)
	for _, w := range [][2]byte{{cmosYear, 0x06}, {cmosCentury, 0x21}, {cmosMonth, 0x02}, {cmosDay, 0x07},
		{cmosHours, 0x06}, {cmosMinutes, 0x28}, {cmosSeconds, 0x15}} {
		c.write(w[0], w[1])
	}
	if got := c.read(cmosSeconds); got != 0x15 {
		t.Errorf("seconds while SET %#x", got)
	}
	clk.advance(5 * time.Second)
	if got := c.read(cmosSeconds); got != 0x15 {
		t.Errorf("clock ran while SET: %#x", got)
	}
	c.write(cmosStatusB, c.read(cmosStatusB)&^rtcBSet)
	clk.advance(time.Second)
	want := rtcFields{0x16, 0x28, 0x06, 0x01, 0x07, 0x02, 0x06, 0x21}
	if got := c.timeRegs(); got != want {
		t.Errorf("after set + 1s: % x, want % x", got, want)
	}
	// One field while running: the minutes only.
	c.write(cmosMinutes, 0x59)
	if got := c.timeRegs(); got[1] != 0x59 || got[0] != 0x16 || got[2] != 0x06 {
		t.Errorf("after a minutes write: % x", got)
	}
	// Set in binary 12-hour mode: 11 PM.
	c.write(cmosStatusB, rtcBBinary)
	c.write(cmosStatusB, rtcBBinary|rtcBSet)
	c.write(cmosHours, 11|rtcHourPM)
	c.write(cmosStatusB, rtcBBinary)
	c.write(cmosStatusB, rtcBBinary|rtcB24h)
	if got := c.read(cmosHours); got != 23 {
		t.Errorf("12h PM write read back in 24h binary: %d", got)
	}
	// Garbage from the guest normalises, never panics.
	c.write(cmosStatusB, rtcBSet)
	for _, idx := range []byte{cmosSeconds, cmosMinutes, cmosHours, cmosDay, cmosMonth, cmosYear, cmosCentury} {
		c.write(idx, 0xff)
	}
	c.write(cmosStatusB, rtcB24h)
	c.timeRegs()
}

func TestRTCRAM(t *testing.T) {
	c, _ := newCMOS(t, time.Unix(0, 0))
	for i := 0x0e; i < 0x80; i++ {
		if rtcFieldIndex(byte(i)) >= 0 {
			continue
		}
		c.write(byte(i), byte(i^0x5a))
	}
	for i := 0x0e; i < 0x80; i++ {
		if rtcFieldIndex(byte(i)) >= 0 {
			continue
		}
		if got := c.read(byte(i)); got != byte(i^0x5a) {
			t.Fatalf("RAM %#x = %#x", i, got)
		}
	}
	// Index bit 7 is the NMI mask, not part of the index.
	c.r.Write(0, []byte{0x80 | 0x40})
	b := []byte{0}
	c.r.Read(1, b)
	if b[0] != 0x40^0x5a || !c.r.NMIMasked() {
		t.Errorf("NMI-masked index read %#x, masked %v", b[0], c.r.NMIMasked())
	}
	c.r.Read(0, b)
	if b[0] != 0xff {
		t.Errorf("index port read %#x", b[0])
	}
	// Alarm registers are RAM.
	c.write(0x01, 0x33)
	if c.read(0x01) != 0x33 {
		t.Error("alarm seconds not kept")
	}
}

func TestRTCMemorySize(t *testing.T) {
	r := NewRTC(RTCConfig{Clock: (&fakeClock{}).now, LowRAM: 3 << 30, HighRAM: 5 << 30})
	c := cmos{t: t, r: r}
	u16 := func(i byte) int { return int(c.read(i)) | int(c.read(i+1))<<8 }
	if u16(cmosBaseLo) != 640 || u16(cmosExtLo) != 0xffff || u16(cmosExtLo2) != 0xffff {
		t.Errorf("base %d ext %#x", u16(cmosBaseLo), u16(cmosExtLo))
	}
	if got := u16(cmosAbove16M); got != (3<<30-16<<20)>>16 {
		t.Errorf("above 16M: %#x", got)
	}
	if got := u16(cmosAbove4G) | int(c.read(cmosAbove4G+2))<<16; got != 5<<30>>16 {
		t.Errorf("above 4G: %#x", got)
	}
	// Small RAM: ext below 64 MiB exact.
	r = NewRTC(RTCConfig{Clock: (&fakeClock{}).now, LowRAM: 32 << 20})
	c = cmos{t: t, r: r}
	if u16(cmosExtLo) != 31<<10 || u16(cmosAbove16M) != 256 {
		t.Errorf("32M: ext %#x above16 %#x", u16(cmosExtLo), u16(cmosAbove16M))
	}
}
