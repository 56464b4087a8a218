package devices

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// portOp is one guest access in a transcript: a read (recorded) or a write.
type portOp struct {
	write bool
	off   uint64
	v     byte
}

func rd(off uint64) portOp         { return portOp{off: off} }
func wr(off uint64, v byte) portOp { return portOp{write: true, off: off, v: v} }

// transcript runs ops on d and returns every byte read, so two devices can
// be compared by what a guest would see.
func transcript(d Device, ops []portOp) []byte {
	var got []byte
	for _, op := range ops {
		b := []byte{op.v}
		if op.write {
			d.Write(op.off, b)
		} else {
			d.Read(op.off, b)
			got = append(got, b[0])
		}
	}
	return got
}

// serialReadAll reads every register (DLAB off), then drains the receive
// side: what the guest sees of a UART.
func serialReadAll() []portOp {
	ops := []portOp{rd(uartIER), rd(uartLCR), wr(uartLCR, 0x80), rd(uartRBR), rd(uartIER), wr(uartLCR, 0x03),
		rd(uartMCR), rd(uartSCR), rd(uartIIR), rd(uartMSR), rd(uartMSR), rd(uartLSR), rd(uartLSR)}
	for range 40 {
		ops = append(ops, rd(uartIIR), rd(uartLSR), rd(uartRBR))
	}
	return ops
}

// restoreCompare saves from, restores into to, and checks that ops read the
// same from both.
func restoreCompare(t *testing.T, name string, from, to interface {
	SaveState() ([]byte, error)
	RestoreState([]byte) error
}, dFrom, dTo Device, ops []portOp) []byte {
	t.Helper()
	st, err := from.SaveState()
	if err != nil {
		t.Fatalf("%s: SaveState: %v", name, err)
	}
	if err := to.RestoreState(st); err != nil {
		t.Fatalf("%s: RestoreState of its own state: %v", name, err)
	}
	again, err := to.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st, again) {
		t.Errorf("%s: restored device saves\n%x\nsaved was\n%x", name, again, st)
	}
	a, b := transcript(dFrom, ops), transcript(dTo, ops)
	if !bytes.Equal(a, b) {
		t.Errorf("%s: guest reads after restore\n%x\nfrom the original\n%x", name, b, a)
	}
	return st
}

func TestSerialStateRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(u uart)
	}{
		{"fifo-with-held-input", func(u uart) {
			u.out(uartLCR, 0x80)
			u.out(uartRBR, 0x34) // DLL
			u.out(uartIER, 0x12) // DLM
			u.out(uartLCR, 0x1b)
			u.out(uartIIR, 0x81) // FIFOs on, trigger 8
			u.out(uartMCR, 0x0b)
			u.out(uartSCR, 0x5a)
			u.out(uartIER, ierRDI|ierRLSI|ierMSI)
			if n := u.s.Input([]byte("0123456789abcdefghijklmnop")); n != 26 {
				u.t.Fatalf("Input took %d", n)
			}
			u.in(uartRBR) // refills from held input
		}},
		{"loopback-overrun-deltas", func(u uart) {
			u.out(uartIER, ierRLSI|ierMSI|ierTHRI)
			u.out(uartMCR, mcrLoop|mcrDTR|mcrOUT1) // DSR and RI come up: deltas
			u.out(uartRBR, 'x')
			u.out(uartRBR, 'y')            // FIFOs off: one byte, this one overruns
			u.out(uartMCR, mcrLoop|mcrDTR) // RI falls: TERI
		}},
		{"thre-pending", func(u uart) {
			u.out(uartIER, ierTHRI)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var l1, l2 line
			s1 := NewSerial(SerialConfig{IRQ: &l1})
			s2 := NewSerial(SerialConfig{IRQ: &l2})
			tc.setup(uart{t, s1})
			high1, _ := l1.state()
			st := restoreCompare(t, "serial", s1, s2, nilDev{}, nilDev{}, nil)
			if high2, _ := l2.state(); high2 != high1 {
				t.Errorf("IRQ line after restore high=%v, original %v", high2, high1)
			}
			if len(l2.levels) == 0 || l2.levels[0] {
				t.Errorf("restore did not drive the line low first: %v", l2.levels)
			}
			ops := serialReadAll()
			a, b := transcript(s1, ops), transcript(s2, ops)
			if !bytes.Equal(a, b) {
				t.Errorf("guest reads after restore\n%x\noriginal\n%x", b, a)
			}
			if h1, _ := l1.state(); h1 != func() bool { h, _ := l2.state(); return h }() {
				t.Errorf("IRQ lines differ after the same reads")
			}
			t.Logf("state %x", st)
		})
	}
}

// nilDev lets restoreCompare skip its transcript when the caller runs its own.
type nilDev struct{}

func (nilDev) Read(uint64, []byte)  {}
func (nilDev) Write(uint64, []byte) {}

// TestSerialStateFullOutput: a guest held back by a full output buffer
// (THRE clear) gets THRE and its interrupt in the restored port, whose
// buffer is empty, as Flush would have given it.
func TestSerialStateFullOutput(t *testing.T) {
	var l1, l2 line
	s1 := NewSerial(SerialConfig{IRQ: &l1, OutBuffer: 64})
	u := uart{t, s1}
	u.out(uartIER, ierTHRI)
	u.in(uartIIR) // take the THRE interrupt
	for u.in(uartLSR)&lsrTHRE != 0 {
		u.out(uartRBR, 'z')
	}
	if high, _ := l1.state(); high {
		t.Fatal("line high with the buffer full")
	}
	s2 := NewSerial(SerialConfig{IRQ: &l2, OutBuffer: 64})
	st, err := s1.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	u2 := uart{t, s2}
	if high, _ := l2.state(); !high {
		t.Error("restored port does not raise its IRQ for THRE")
	}
	if iir := u2.in(uartIIR); iir&0x0f != iirTHRI {
		t.Errorf("restored IIR %#x, want THRE", iir)
	}
	if lsr := u2.in(uartLSR); lsr&lsrTHRE == 0 {
		t.Errorf("restored LSR %#x, want THRE", lsr)
	}
}

func TestSerialStateRejects(t *testing.T) {
	s := NewSerial(SerialConfig{InBuffer: 8})
	u := uart{t, s}
	u.out(uartIIR, 0x01)
	s.Input([]byte("0123456789abcdefghij"))
	good, err := s.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"magic", func(b []byte) []byte { b[0] = 'X'; return b }, "magic"},
		{"version", func(b []byte) []byte { b[4] = 2; return b }, "format version 2"},
		{"short", func(b []byte) []byte { return b[:10] }, "want at least"},
		{"ier", func(b []byte) []byte { b[serialStIER] = 0x1f; return b }, "IER 0x1f"},
		{"mcr", func(b []byte) []byte { b[serialStMCR] = 0x20; return b }, "MCR 0x20"},
		{"fcr", func(b []byte) []byte { b[serialStFCR] = 0x40; return b }, "FCR 0x40"},
		{"lsr", func(b []byte) []byte { b[serialStLSRErr] = lsrDR; return b }, "LSR error bits"},
		{"msr", func(b []byte) []byte { b[serialStMSRDelta] = msrCTS; return b }, "MSR delta"},
		{"thri-flag", func(b []byte) []byte { b[serialStTHRIntr] = 2; return b }, "THRE interrupt flag 0x2"},
		{"thri-disabled", func(b []byte) []byte { b[serialStTHRIntr] = 1; return b }, "THRE interrupt pending"},
		{"rx-too-long", func(b []byte) []byte { b[serialStRXLen] = 17; return b }, "receive FIFO holds 17"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }, "bytes, want"},
		{"padded", func(b []byte) []byte { return append(b, 0) }, "bytes, want"},
		{"held-too-much", func(b []byte) []byte {
			b = append(b, make([]byte, 9-int(b[serialStHeldLen]))...)
			b[serialStHeldLen] = 9
			return b
		}, "more than this port's input buffer of 8"},
		{"held-with-room", func(b []byte) []byte { b[serialStFCR] = 0; return b }, "receive FIFO holds 16"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fresh := NewSerial(SerialConfig{InBuffer: 8})
			before, _ := fresh.SaveState()
			err := fresh.RestoreState(tc.mod(slices.Clone(good)))
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "devices: serial state: ") {
				t.Fatalf("RestoreState error %v, want ErrBadState naming %q", err, tc.want)
			}
			if after, _ := fresh.SaveState(); !bytes.Equal(before, after) {
				t.Error("a refused state changed the port")
			}
		})
	}
	// Held input with room in the FIFO, FIFOs on.
	b := slices.Clone(good)
	b[serialStRXLen] = 15
	b = append(b[:serialStData+15], b[serialStData+16:]...)
	if err := NewSerial(SerialConfig{InBuffer: 8}).RestoreState(b); err == nil || !strings.Contains(err.Error(), "held while the receive FIFO has room") {
		t.Errorf("held input with FIFO room: %v", err)
	}
}

func TestRTCStateFollowsHostClock(t *testing.T) {
	start := time.Date(2030, 5, 6, 7, 8, 9, 0, time.UTC)
	c1, clk1 := newCMOS(t, start)
	// Binary mode, the guest sets its clock to 1999-12-31 23:59:00.
	c1.write(cmosStatusB, rtcBSet|rtcB24h|rtcBBinary)
	for reg, v := range map[byte]byte{cmosSeconds: 0, cmosMinutes: 59, cmosHours: 23, cmosDay: 31, cmosMonth: 12, cmosYear: 99, cmosCentury: 19} {
		c1.write(reg, v)
	}
	c1.write(cmosStatusB, rtcB24h|rtcBBinary)
	c1.write(0x40, 0xaa) // plain CMOS RAM
	c1.write(cmosStatusA, 0x2f)
	c1.r.Write(0, []byte{0x80 | 0x41}) // index 0x41, NMIs masked
	st, err := c1.r.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	// Restored an hour later, by the host's clock.
	c2, clk2 := newCMOS(t, start)
	clk2.advance(time.Hour)
	if err := c2.r.RestoreState(st); err != nil {
		t.Fatal(err)
	}
	if !c2.r.NMIMasked() {
		t.Error("NMI mask lost")
	}
	b := []byte{0}
	c2.r.Read(1, b) // the index survived: 0x41 (0)
	if b[0] != 0 {
		t.Errorf("data at the restored index 0x41 reads %#x", b[0])
	}
	if got := c2.read(0x40); got != 0xaa {
		t.Errorf("CMOS 0x40 reads %#x, want 0xaa", got)
	}
	if got := c2.read(cmosStatusA); got != 0x2f {
		t.Errorf("status A %#x, want 0x2f", got)
	}
	if got := c2.read(cmosStatusB); got != rtcB24h|rtcBBinary {
		t.Errorf("status B %#x", got)
	}
	f := c2.timeRegs()
	want := rtcFields{0, 59, 0, 7, 1, 1, 0, 20} // an hour later: 2000-01-01 00:59:00, a Saturday
	if f != want {
		t.Errorf("restored RTC reads %v, want %v", f, want)
	}
	_ = clk1
}

func TestRTCStateRejects(t *testing.T) {
	c, _ := newCMOS(t, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	good, _ := c.r.SaveState()
	for _, tc := range []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"index", func(b []byte) []byte { b[rtcStIndex] = 0x80; return b }, "index 0x80"},
		{"nmi", func(b []byte) []byte { b[rtcStNMI] = 3; return b }, "NMI mask 0x3"},
		{"uip", func(b []byte) []byte { b[rtcStRAM+cmosStatusA] |= rtcAUIP; return b }, "status A"},
		{"set-uie", func(b []byte) []byte { b[rtcStRAM+cmosStatusB] |= rtcBSet | rtcBUIE; return b }, "status B"},
		{"status-c", func(b []byte) []byte { b[rtcStRAM+cmosStatusC] = 0x80; return b }, "status C"},
		{"status-d", func(b []byte) []byte { b[rtcStRAM+cmosStatusD] = 0; return b }, "status D"},
		{"padded", func(b []byte) []byte { return append(b, 0) }, "153 bytes, want 152"},
		{"short", func(b []byte) []byte { return b[:100] }, "want at least 152"},
		{"magic", func(b []byte) []byte { copy(b, "UART"); return b }, `magic "UART"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.r.RestoreState(tc.mod(slices.Clone(good)))
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "devices: rtc state: ") {
				t.Fatalf("RestoreState error %v, want ErrBadState naming %q", err, tc.want)
			}
		})
	}
}

func TestI8042StateRoundTrip(t *testing.T) {
	for _, kbd := range []bool{false, true} {
		t.Run(fmt.Sprint("keyboard=", kbd), func(t *testing.T) {
			var l1, l2 line
			c1, k1 := newKBC(t, I8042Config{Keyboard: kbd, KbdIRQ: &l1})
			c1.out(I8042CommandPort, i8042CmdWriteCtr)
			c1.out(I8042DataPort, i8042CtrKbdInt|i8042CtrXlate) // SYS off
			if kbd {
				c1.out(I8042DataPort, kbdCmdGetID) // ACK now, two ID bytes queued
				c1.out(I8042DataPort, kbdCmdSetLEDs)
			} else {
				c1.out(I8042DataPort, 0x12) // no keyboard: 0xfe with timeout
			}
			c1.out(I8042CommandPort, i8042CmdWriteOut) // waits for its parameter
			high1, _ := l1.state()
			c2, k2 := newKBC(t, I8042Config{Keyboard: kbd, KbdIRQ: &l2})
			restoreCompare(t, "i8042", k1, k2, nilDev{}, nilDev{}, nil)
			if high2, _ := l2.state(); high2 != high1 || !high1 {
				t.Errorf("IRQ 1 after restore high=%v, original %v (want high)", high2, high1)
			}
			// The pending 0xd1 takes this byte on both; then the guest
			// reads everything out and asks for the command byte.
			ops := []portOp{wr(0, 0x03)}
			for range 6 {
				ops = append(ops, rd(4), rd(0))
			}
			ops = append(ops, wr(4, i8042CmdReadCtr), rd(4), rd(0), wr(4, i8042CmdReadOutput), rd(0))
			a, b := c1.transcript(ops), c2.transcript(ops)
			if !bytes.Equal(a, b) {
				t.Errorf("guest reads after restore %x, original %x", b, a)
			}
		})
	}
}

// transcript runs ops on the controller's ports: off 0 is 0x60, 4 is 0x64.
func (c kbc) transcript(ops []portOp) []byte {
	var got []byte
	for _, op := range ops {
		if op.write {
			c.out(I8042DataPort+op.off, op.v)
		} else {
			got = append(got, c.in(I8042DataPort+op.off))
		}
	}
	return got
}

func TestI8042StateRejects(t *testing.T) {
	c, k := newKBC(t, I8042Config{Keyboard: true})
	c.out(I8042DataPort, kbdCmdGetID)
	good, _ := k.SaveState()
	for _, tc := range []struct {
		name string
		mod  func(b []byte) []byte
		want string
	}{
		{"status", func(b []byte) []byte { b[i8042StStatus] = i8042StrOBF | i8042StrKeylock; return b }, "status 0x11"},
		{"keylock", func(b []byte) []byte { b[i8042StStatus] = i8042StrSys; return b }, "status 0x04"},
		{"ctr", func(b []byte) []byte { b[i8042StCtr] = 0x80; return b }, "command byte 0x80"},
		{"a20", func(b []byte) []byte { b[i8042StOutPort] = 0x01; return b }, "output port 0x01"},
		{"pending", func(b []byte) []byte { b[i8042StPending] = 0xaa; return b }, "pending command 0xaa"},
		{"flag", func(b []byte) []byte { b[i8042StOutTO] = 7; return b }, "timeout flag 0x7"},
		{"irq-empty", func(b []byte) []byte {
			b[i8042StIRQ], b[i8042StOutFull], b[i8042StKbdQLen] = 1, 0, 0
			return b[:i8042StKbdQueue]
		}, "IRQ 1 raised"},
		{"kbd-pending", func(b []byte) []byte { b[i8042StKbdPend] = kbdCmdEcho; return b }, "keyboard command 0xee"},
		{"queue-len", func(b []byte) []byte { b[i8042StKbdQLen] = 3; return b }, "want 21 for 3"},
		{"queue-big", func(b []byte) []byte {
			b[i8042StKbdQLen] = 17
			return append(b, make([]byte, 15)...)
		}, "holds 17 bytes"},
		{"queue-no-out", func(b []byte) []byte { b[i8042StOutFull], b[i8042StIRQ] = 0, 0; return b }, "output buffer is empty"},
		{"no-kbd", func(b []byte) []byte { b[i8042StKbd] = 0; return b }, "no keyboard"},
		{"other-config", func(b []byte) []byte {
			b[i8042StKbdPend], b[i8042StKbdQLen] = 0, 0
			b[i8042StKbd] = 0
			return b[:i8042StKbdQueue]
		}, "keyboard=false, this controller has keyboard=true"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := k.RestoreState(tc.mod(slices.Clone(good)))
			if !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "devices: i8042 state: ") {
				t.Fatalf("RestoreState error %v, want ErrBadState naming %q", err, tc.want)
			}
		})
	}
}

// TestSerialStateConcurrent saves and restores while host input, output
// and a vCPU use the port (run with -race).
func TestSerialStateConcurrent(t *testing.T) {
	var l line
	var out bytes.Buffer
	s := NewSerial(SerialConfig{IRQ: &l, Out: &out})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); _ = s.Run(ctx) }()
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			s.Inject([]byte("in"))
		}
	}()
	go func() {
		defer wg.Done()
		u := uart{t, s}
		for ctx.Err() == nil {
			u.out(uartRBR, 'o')
			u.in(uartRBR)
			u.in(uartIIR)
		}
	}()
	for range 200 {
		st, err := s.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RestoreState(st); err != nil {
			t.Fatalf("restoring a state saved under load: %v", err)
		}
	}
	cancel()
	wg.Wait()
}
