package devices

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// line records an IRQ line's level changes.
type line struct {
	mu     sync.Mutex
	high   bool
	rises  int
	levels []bool
}

func (l *line) SetLevel(high bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if high && !l.high {
		l.rises++
	}
	l.high = high
	l.levels = append(l.levels, high)
	return nil
}

func (l *line) state() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.high, l.rises
}

type uart struct {
	t *testing.T
	s *Serial
}

func (u uart) in(off uint64) byte {
	b := []byte{0}
	u.s.Read(off, b)
	return b[0]
}

func (u uart) out(off uint64, v byte) { u.s.Write(off, []byte{v}) }

// linux8250Autoconfig follows autoconfig() and autoconfig_16550a() of
// Linux's drivers/tty/serial/8250/8250_port.c (with the 16550A variant
// probes enabled and the loopback test not skipped) and returns the type
// the driver would settle on.
func linux8250Autoconfig(u uart) string {
	// Scratch test through IER.
	scratch := u.in(uartIER)
	u.out(uartIER, 0)
	scratch2 := u.in(uartIER) & 0x0f
	u.out(uartIER, 0x0f)
	scratch3 := u.in(uartIER) & 0x0f
	u.out(uartIER, scratch)
	if scratch2 != 0 || scratch3 != 0x0f {
		return "unknown (IER test)"
	}
	saveMCR := u.in(uartMCR)
	saveLCR := u.in(uartLCR)
	// Loopback test: RTS|OUT2 come back as CTS|DCD.
	u.out(uartMCR, mcrLoop|0x0a)
	status1 := u.in(uartMSR) & 0xf0
	u.out(uartMCR, saveMCR)
	if status1 != 0x90 {
		return "unknown (loopback test)"
	}
	u.out(uartLCR, 0xbf) // UART_LCR_CONF_MODE_B
	u.out(2, 0)          // EFR (FCR on a 16550A)
	u.out(uartLCR, 0)
	u.out(uartIIR, fcrEnable)
	typ := "unknown"
	switch u.in(uartIIR) >> 6 {
	case 0:
		typ = "8250/16450"
	case 1:
		typ = "unknown (IIR 01)"
	case 2:
		typ = "16550"
	case 3:
		typ = autoconfig16550A(u)
	}
	u.out(uartLCR, saveLCR)
	// Reset the UART as autoconfig does.
	u.out(uartMCR, saveMCR)
	u.out(uartIIR, fcrEnable|fcrClearRX|fcrClearTX)
	u.out(uartIIR, 0)
	u.in(uartRBR)
	u.out(uartIER, 0)
	return typ
}

func autoconfig16550A(u uart) string {
	typ := "16550A"
	u.out(uartLCR, 0x80) // UART_LCR_CONF_MODE_A
	if u.in(2) == 0 {    // EFR
		return "16650 (EFRv1)"
	}
	u.out(uartLCR, 0xbf)
	if u.in(2) == 0 {
		return "16650V2 (EFRv2)"
	}
	// National Semiconductor SuperIO: LOOP bit mirrored in EXCR1.
	u.out(uartLCR, 0)
	status1 := u.in(uartMCR)
	u.out(uartLCR, 0xe0)
	status2 := u.in(0x02)
	if (status2^status1)&mcrLoop == 0 {
		u.out(uartLCR, 0)
		u.out(uartMCR, status1^mcrLoop)
		u.out(uartLCR, 0xe0)
		status2 = u.in(0x02)
		u.out(uartLCR, 0)
		u.out(uartMCR, status1)
		if (status2^status1)&mcrLoop != 0 {
			return "NS16550A"
		}
	}
	// TI16750: IIR bit 5 with the 64-byte FIFO bit, only with DLAB set.
	u.out(uartLCR, 0)
	u.out(uartIIR, fcrEnable|0x20)
	st1 := u.in(uartIIR) & 0xe0
	u.out(uartIIR, fcrEnable)
	u.out(uartLCR, 0x80)
	u.out(uartIIR, fcrEnable|0x20)
	st2 := u.in(uartIIR) & 0xe0
	u.out(uartIIR, fcrEnable)
	u.out(uartLCR, 0)
	if st1 == 0xc0 && st2 == 0xe0 {
		return "16750"
	}
	// XScale: IER bit 6 (UUE) writable.
	iersave := u.in(uartIER)
	u.out(uartIER, iersave&^0x40)
	if u.in(uartIER)&0x40 == 0 {
		u.out(uartIER, iersave|0x40)
		if u.in(uartIER)&0x40 != 0 {
			typ = "XScale"
		}
	}
	u.out(uartIER, iersave)
	if typ == "16550A" && sizeFIFO(u) == 64 {
		typ = "U6_16550A"
	}
	return typ
}

// sizeFIFO is Linux's size_fifo(): loop 256 bytes back and count them.
func sizeFIFO(u uart) int {
	oldLCR := u.in(uartLCR)
	oldMCR := u.in(uartMCR)
	u.out(uartIIR, fcrEnable|fcrClearRX|fcrClearTX)
	u.out(uartMCR, mcrLoop)
	u.out(uartLCR, 0x80)
	oldDL := uint16(u.in(0)) | uint16(u.in(1))<<8
	u.out(0, 1)
	u.out(1, 0)
	u.out(uartLCR, 0x03)
	for i := 0; i < 256; i++ {
		u.out(uartRBR, byte(i))
	}
	count := 0
	for ; u.in(uartLSR)&lsrDR != 0 && count < 256; count++ {
		u.in(uartRBR)
	}
	u.out(uartIIR, 0)
	u.out(uartMCR, oldMCR)
	u.out(uartLCR, 0x80)
	u.out(0, byte(oldDL))
	u.out(1, byte(oldDL>>8))
	u.out(uartLCR, oldLCR)
	return count
}

func newUART(t *testing.T, cfg SerialConfig) uart {
	return uart{t: t, s: NewSerial(cfg)}
}

func TestSerialLinuxAutoconfig(t *testing.T) {
	u := newUART(t, SerialConfig{})
	if got := linux8250Autoconfig(u); got != "16550A" {
		t.Fatalf("Linux 8250 autoconfig finds %q, want 16550A", got)
	}
	if got := sizeFIFO(u); got != 16 {
		t.Errorf("size_fifo = %d, want 16", got)
	}
	if st := u.s.Stats(); st.TX != 0 {
		t.Errorf("loopback bytes reached the console: %+v", st)
	}
	// After the probe, the UART is usable: output reaches Out.
	if lsr := u.in(uartLSR); lsr != lsrTHRE|lsrTEMT {
		t.Errorf("LSR after probe = %#x", lsr)
	}
}

func TestSerialRegisters(t *testing.T) {
	u := newUART(t, SerialConfig{})
	// Scratch register.
	u.out(uartSCR, 0xa5)
	if u.in(uartSCR) != 0xa5 {
		t.Error("scratch register lost")
	}
	// DLAB: divisor latch replaces RBR/THR and IER.
	u.out(uartIER, 0x05)
	u.out(uartLCR, 0x83)
	u.out(0, 0x01)
	u.out(1, 0x02)
	if u.in(0) != 0x01 || u.in(1) != 0x02 {
		t.Error("divisor latch not kept")
	}
	u.out(uartLCR, 0x03)
	if u.in(uartIER) != 0x05 || u.in(uartLCR) != 0x03 {
		t.Error("IER or LCR changed by divisor writes")
	}
	if st := u.s.Stats(); st.TX != 0 {
		t.Error("divisor write transmitted")
	}
	// IIR without FIFOs: bits 7:6 clear; with: set; FCR bits 7:6 (trigger) don't leak.
	if u.in(uartIIR) != 0x01 {
		t.Errorf("IIR, FIFOs off = %#x", u.in(uartIIR))
	}
	u.out(uartIIR, 0xc1)
	if u.in(uartIIR) != 0xc1 {
		t.Errorf("IIR, FIFOs on = %#x", u.in(uartIIR))
	}
	// MSR: a terminal is attached.
	if u.in(uartMSR) != 0xb0 {
		t.Errorf("MSR = %#x, want 0xb0", u.in(uartMSR))
	}
	// MCR keeps 5 bits.
	u.out(uartMCR, 0xff)
	if u.in(uartMCR) != 0x1f {
		t.Errorf("MCR = %#x", u.in(uartMCR))
	}
	// In loopback with all outputs set, MSR shows all four, with deltas for
	// the lines that changed (RI rose: no TERI).
	if got := u.in(uartMSR); got != 0xf0 {
		t.Errorf("loopback MSR = %#x, want 0xf0", got)
	}
	u.out(uartMCR, mcrLoop)
	if got := u.in(uartMSR); got != msrDCTS|msrDDSR|msrTERI|msrDDCD {
		t.Errorf("loopback MSR after dropping all = %#x", got)
	}
	// A word access reaches two consecutive registers.
	u.out(uartMCR, 0)
	u.s.Write(uartLCR, []byte{0x03, 0x0b})
	if u.in(uartLCR) != 0x03 || u.in(uartMCR) != 0x0b {
		t.Error("word write not split into bytes")
	}
}

// TestSerialTHRE follows the THRE test of Linux's serial8250_do_startup:
// a working 16550 reasserts THRE each time ETBEI is enabled.
func TestSerialTHRE(t *testing.T) {
	var l line
	var out bytes.Buffer
	u := newUART(t, SerialConfig{IRQ: &l, Out: &out})
	u.out(uartIER, ierTHRI)
	iir1 := u.in(uartIIR)
	u.out(uartIER, 0)
	u.out(uartIER, ierTHRI)
	iir := u.in(uartIIR)
	u.out(uartIER, 0)
	if iir1 != iirTHRI || iir != iirTHRI {
		t.Fatalf("THRE test IIRs %#x %#x, want 0x02 0x02", iir1, iir)
	}
	if high, rises := l.state(); high || rises != 2 {
		t.Errorf("line high=%v rises=%d, want low after 2 rises", high, rises)
	}
	// IIR read clears THRE when it is reported...
	u.out(uartIER, ierTHRI)
	if u.in(uartIIR) != iirTHRI || u.in(uartIIR) != iirNoInt {
		t.Error("IIR read did not clear THRE")
	}
	if high, _ := l.state(); high {
		t.Error("line still high with nothing pending")
	}
	// ...and a THR write re-raises it (transmission is instant): a new edge.
	_, r0 := l.state()
	u.out(uartRBR, 'x')
	if high, r := l.state(); !high || r != r0+1 {
		t.Errorf("after THR write: high=%v rises %d→%d", high, r0, r)
	}
	if u.in(uartIIR) != iirTHRI {
		t.Error("THRE not pending after THR write")
	}
	// ...but not when RX data outranks it: IIR read then doesn't clear THRE.
	u.out(uartRBR, 'y')
	u.out(uartIER, ierTHRI|ierRDI)
	u.s.Input([]byte{'k'})
	if got := u.in(uartIIR); got != iirRDI {
		t.Fatalf("IIR = %#x, want RX data", got)
	}
	if u.in(uartRBR) != 'k' {
		t.Error("RBR")
	}
	if got := u.in(uartIIR); got != iirTHRI {
		t.Errorf("THRE lost under RX: IIR %#x", got)
	}
	u.s.Flush()
	if out.String() != "xy" {
		t.Errorf("output %q", out.String())
	}
}

func TestSerialRXInterrupts(t *testing.T) {
	var l line
	u := newUART(t, SerialConfig{IRQ: &l})
	u.out(uartIIR, fcrEnable|0x80) // trigger level 8
	u.out(uartIER, ierRDI)
	if high, _ := l.state(); high {
		t.Fatal("interrupt with nothing received")
	}
	if n := u.s.Input([]byte("abc")); n != 3 {
		t.Fatalf("Input took %d", n)
	}
	if high, r := l.state(); !high || r != 1 {
		t.Error("no RX interrupt")
	}
	if got := u.in(uartIIR); got != 0xc0|iirTimeout {
		t.Errorf("IIR below trigger = %#x, want 0xcc", got)
	}
	u.s.Input([]byte("defgh"))
	if got := u.in(uartIIR); got != 0xc0|iirRDI {
		t.Errorf("IIR at trigger = %#x, want 0xc4", got)
	}
	// More bytes while already pending: no new edge needed.
	if _, r := l.state(); r != 1 {
		t.Errorf("rises %d", r)
	}
	var got []byte
	for u.in(uartLSR)&lsrDR != 0 {
		got = append(got, u.in(uartRBR))
	}
	if string(got) != "abcdefgh" {
		t.Errorf("read %q", got)
	}
	if high, _ := l.state(); high || u.in(uartIIR) != 0xc1 {
		t.Error("interrupt still pending after draining")
	}
	// Line status: loopback overrun raises RLSI until LSR is read.
	u.out(uartIER, ierRLSI|ierRDI)
	u.out(uartMCR, mcrLoop)
	for i := 0; i < 17; i++ {
		u.out(uartRBR, byte(i))
	}
	if got := u.in(uartIIR); got != 0xc0|iirRLSI {
		t.Errorf("IIR after overrun = %#x", got)
	}
	if lsr := u.in(uartLSR); lsr&lsrOE == 0 {
		t.Errorf("LSR %#x lacks OE", lsr)
	}
	if got := u.in(uartIIR); got != 0xc0|iirRDI {
		t.Errorf("IIR after LSR read = %#x", got)
	}
	if st := u.s.Stats(); st.Overruns != 1 {
		t.Errorf("overruns %d", st.Overruns)
	}
	// Modem status interrupt.
	u.out(uartIIR, fcrEnable|fcrClearRX)
	u.out(uartIER, ierMSI)
	u.out(uartMCR, mcrLoop|mcrRTS)
	if got := u.in(uartIIR); got != 0xc0|iirMSI {
		t.Errorf("IIR after CTS change = %#x", got)
	}
	u.in(uartMSR)
	if got := u.in(uartIIR); got != 0xc1 {
		t.Errorf("IIR after MSR read = %#x", got)
	}
}

func TestSerialInputBackPressure(t *testing.T) {
	u := newUART(t, SerialConfig{InBuffer: -1}) // the FIFO alone
	// FIFOs off: one byte.
	if n := u.s.Input([]byte("xyz")); n != 1 {
		t.Errorf("Input without FIFO took %d", n)
	}
	u.out(uartIIR, fcrEnable)
	if n := u.s.Input(bytes.Repeat([]byte{'a'}, 40)); n != 16 {
		t.Errorf("Input took %d, want 16", n)
	}
	if n := u.s.Input([]byte("b")); n != 0 {
		t.Error("full FIFO took more")
	}
	if st := u.s.Stats(); st.RX != 17 {
		t.Errorf("RX count %d", st.RX)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := u.s.WaitInputSpace(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitInputSpace on a full FIFO: %v", err)
	}
	// A pump delivers everything, in order, as the guest reads.
	u.out(uartIIR, fcrEnable|fcrClearRX)
	msg := bytes.Repeat([]byte("0123456789"), 50)
	done := make(chan error, 1)
	go func() { done <- u.s.InputFrom(context.Background(), bytes.NewReader(msg)) }()
	var got []byte
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(msg) && time.Now().Before(deadline) {
		if u.in(uartLSR)&lsrDR != 0 {
			got = append(got, u.in(uartRBR))
		} else {
			time.Sleep(time.Millisecond)
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("pumped %d bytes, mismatch", len(got))
	}
	if err := <-done; err != nil {
		t.Errorf("InputFrom: %v", err)
	}
	// Stoppable: a pump waiting on a full FIFO returns on cancel.
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- u.s.InputFrom(ctx2, bytes.NewReader(msg)) }()
	time.Sleep(10 * time.Millisecond)
	cancel2()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled InputFrom: %v", err)
	}
	// Loopback disconnects the host.
	u.out(uartIIR, fcrEnable|fcrClearRX)
	u.out(uartMCR, mcrLoop)
	if n := u.s.Input([]byte("q")); n != 0 {
		t.Error("Input accepted in loopback")
	}
}

// slowWriter blocks every Write until released.
type slowWriter struct {
	gate chan struct{}
	mu   sync.Mutex
	buf  bytes.Buffer
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func TestSerialSlowTerminal(t *testing.T) {
	var l line
	w := &slowWriter{gate: make(chan struct{})}
	u := newUART(t, SerialConfig{IRQ: &l, Out: w, OutBuffer: 64})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- u.s.Run(ctx) }()
	u.out(uartIIR, fcrEnable)
	// Polling console output, as printk does: wait for THRE (bounded), write.
	sent := 0
	for i := 0; i < 300; i++ {
		if u.in(uartLSR)&lsrTHRE == 0 {
			break
		}
		u.out(uartRBR, byte(i))
		sent++
		if sent == 1 {
			time.Sleep(20 * time.Millisecond) // let Run take the first byte and block
		}
	}
	// The writer is stuck: the guest sees THRE clear after at most two buffers.
	if sent >= 300 || sent > 1+64 {
		t.Fatalf("sent %d bytes into a stuck terminal", sent)
	}
	// Enabling the THRE interrupt now raises nothing: THR is not empty.
	u.out(uartIER, ierTHRI)
	if u.in(uartIIR) != 0xc1 {
		t.Error("THRE interrupt with a full transmitter")
	}
	// A write anyway is dropped and counted.
	u.out(uartRBR, 'X')
	if st := u.s.Stats(); st.TXDropped != 1 || st.TX != uint64(sent) {
		t.Errorf("stats %+v, sent %d", st, sent)
	}
	// Release the terminal: THRE and its interrupt come back, output is whole.
	_, r0 := l.state()
	close(w.gate)
	deadline := time.Now().Add(10 * time.Second)
	for u.in(uartLSR)&lsrTHRE == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if high, r := l.state(); !high || r <= r0 {
		t.Error("no THRE interrupt when the terminal drained")
	}
	u.s.Flush()
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
	w.mu.Lock()
	got := w.buf.Bytes()
	w.mu.Unlock()
	if len(got) != sent {
		t.Fatalf("terminal got %d bytes, guest sent %d", len(got), sent)
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d = %d: order lost", i, b)
		}
	}
	if st := u.s.Stats(); st.Written != uint64(sent) {
		t.Errorf("Written %d", st.Written)
	}
}

// countWriter records each Write.
type countWriter struct {
	mu     sync.Mutex
	writes [][]byte
}

func (w *countWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (w *countWriter) got() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(bytes.Join(w.writes, nil)), len(w.writes)
}

// TestSerialGathersOutput: a guest writing a byte per exit costs Out a
// write per line (and one for the first byte after a quiet spell), not a
// write per byte; a line left unfinished still comes out, and so does
// what is buffered when Run ends.
func TestSerialGathersOutput(t *testing.T) {
	w := &countWriter{}
	u := newUART(t, SerialConfig{Out: w})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- u.s.Run(ctx) }()
	var want strings.Builder
	for line := range 4 {
		for i := range 200 {
			want.WriteByte('a' + byte((line+i)%26))
		}
		want.WriteByte('\n')
	}
	// A byte every 20 us, as a guest whose every byte is an exit: Run
	// has time to wake between bytes.
	began := time.Now()
	for _, b := range []byte(want.String()) {
		u.out(uartRBR, b)
		for start := time.Now(); time.Since(start) < 20*time.Microsecond; {
		}
	}
	took := time.Since(began)
	waitOut := func(want string) int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got, n := w.got()
			if got == want {
				return n
			}
			if time.Now().After(deadline) {
				t.Fatalf("terminal got %q, want %q", got, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	// 804 bytes over ~16 ms: Run woke for nearly every byte before (174
	// writes); gathered, it is at most one write per line and one per
	// millisecond the guest took (a loaded host stretches that), plus the
	// first byte's.
	n := waitOut(want.String())
	most := int(took/serialGather) + 4 + 2
	t.Logf("%d writes for %d bytes in 4 lines over %v (at most %d)", n, want.Len(), took, most)
	if n > most {
		t.Errorf("%d writes for %d bytes in 4 lines over %v, want at most %d", n, want.Len(), took, most)
	}
	// A prompt without a line end comes out after the hold.
	for _, b := range []byte("$ ") {
		u.out(uartRBR, b)
	}
	want.WriteString("$ ")
	waitOut(want.String())
	// What the guest wrote just before the end is written by Run's final
	// flush.
	u.out(uartRBR, 'z')
	cancel()
	if err := <-runDone; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
	if got, _ := w.got(); got != want.String()+"z" {
		t.Errorf("after Run: %q", got[max(0, len(got)-10):])
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, io.ErrClosedPipe
}

func TestSerialBrokenTerminal(t *testing.T) {
	w := &failWriter{}
	u := newUART(t, SerialConfig{Out: w, OutBuffer: 64})
	for i := 0; i < 1000; i++ {
		if u.in(uartLSR)&lsrTHRE == 0 {
			u.s.Flush()
		}
		u.out(uartRBR, 'a')
	}
	u.s.Flush()
	if st := u.s.Stats(); st.TX != 1000 || st.TXDropped != 0 || st.Written != 0 {
		t.Errorf("stats %+v", st)
	}
	if w.n != 1 {
		t.Errorf("broken writer called %d times, want once", w.n)
	}
}

// BenchmarkSerialTHRWrite is the cost of one guest output byte with the
// THRE interrupt enabled (a line pulse per byte), excluding the VM exit.
func BenchmarkSerialTHRWrite(b *testing.B) {
	s := NewSerial(SerialConfig{IRQ: NoIRQ{}, Out: io.Discard})
	s.Write(uartIER, []byte{ierTHRI})
	data := []byte{'x'}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Write(uartRBR, data)
		if i%1024 == 0 {
			s.Flush()
		}
	}
}
