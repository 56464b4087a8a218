package devices

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"
)

// stuckWriter blocks every Write until released, and has no deadlines.
type stuckWriter struct {
	gate    chan struct{}
	entered chan struct{} // gets a value each time a Write starts
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newStuckWriter() *stuckWriter {
	return &stuckWriter{gate: make(chan struct{}), entered: make(chan struct{}, 100)}
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.gate
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stuckWriter) bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]byte(nil), w.buf.Bytes()...)
}

// printk writes msg as Linux's 8250 console does: for each byte, wait for
// THRE for at most 10 ms (wait_for_xmitr), then write THR anyway.
func printk(u uart, msg []byte) {
	for _, b := range msg {
		for deadline := time.Now().Add(10 * time.Millisecond); u.in(uartLSR)&lsrTHRE == 0 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond)
		}
		u.out(uartRBR, b)
	}
}

// TestSerialStalledWriter: a writer that stops taking output must neither
// hold the guest (THRE comes back, overflow is dropped and counted) nor the
// end of Run for longer than FlushTimeout.
func TestSerialStalledWriter(t *testing.T) {
	var l line
	w := newStuckWriter()
	u := newUART(t, SerialConfig{IRQ: &l, Out: w, OutBuffer: 64, StallTimeout: 300 * time.Millisecond, FlushTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	go u.s.Run(ctx)
	u.out(uartIIR, fcrEnable)
	u.out(uartRBR, 'a')
	<-w.entered // Run is stuck in Write with "a"
	// Fill the buffer: the guest is throttled (THRE clear) before the stall.
	for i := 0; u.in(uartLSR)&lsrTHRE != 0; i++ {
		if i > 1<<16 {
			t.Fatalf("THRE never cleared with Out stuck: stats %+v", u.s.Stats())
		}
		u.out(uartRBR, 'b')
	}
	// After StallTimeout the transmitter takes bytes again, dropping them,
	// and raises THRE for an interrupt-driven guest.
	u.out(uartIER, ierTHRI)
	deadline := time.Now().Add(5 * time.Second)
	for u.in(uartLSR)&lsrTHRE == 0 {
		if time.Now().After(deadline) {
			t.Fatal("THRE never came back with a stalled writer")
		}
		time.Sleep(time.Millisecond)
	}
	if high, _ := l.state(); !high {
		t.Error("no THRE interrupt when the writer stalled")
	}
	start := time.Now()
	msg := bytes.Repeat([]byte("x"), 1000)
	printk(u, msg)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("1000 bytes to a stalled console took %v", d)
	}
	st := u.s.Stats()
	if st.OutLost < 1000 || st.TXDropped != 0 {
		t.Errorf("stats %+v: want the 1000 bytes counted in OutLost", st)
	}
	// Ending Run does not wait for the writer (it has no deadline)...
	cancel()
	if u.s.WaitRun(200 * time.Millisecond) {
		t.Fatal("Run returned while Out was still blocked")
	}
	// ...and once the writer returns, Run writes nothing more and returns.
	close(w.gate)
	if !u.s.WaitRun(5 * time.Second) {
		t.Fatal("Run still running after the writer returned")
	}
	if got := w.bytes(); string(got) != "a" {
		t.Errorf("writer got %q after the stop, want only the byte in flight", got)
	}
	st = u.s.Stats()
	if st.TX != st.Written+st.OutLost {
		t.Errorf("stats %+v: TX != Written+OutLost", st)
	}
	// The IRQ line is left alone once Run ended (the VM may be gone).
	_, r0 := l.state()
	u.out(uartIER, 0)
	u.out(uartIER, ierTHRI)
	if _, r := l.state(); r != r0 {
		t.Error("IRQ line driven after Run ended")
	}
}

// TestSerialStopBlockedPipe: a FIFO or pipe nobody reads (an *os.File in
// the poller) blocks Run's Write; ending Run cuts it short with a deadline.
func TestSerialStopBlockedPipe(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	u := newUART(t, SerialConfig{Out: w, OutBuffer: 64, StallTimeout: time.Hour, FlushTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- u.s.Run(ctx) }()
	// Fill the pipe (64 KiB) and the buffers, until the guest is held.
	fillBy := time.Now().Add(60 * time.Second)
	for held := time.Duration(0); held < 100*time.Millisecond; {
		if time.Now().After(fillBy) {
			t.Fatalf("the guest was never held by a full pipe: stats %+v", u.s.Stats())
		}
		if u.in(uartLSR)&lsrTHRE == 0 {
			time.Sleep(time.Millisecond)
			held += time.Millisecond
			continue
		}
		held = 0
		u.out(uartRBR, 'z')
	}
	start := time.Now()
	cancel()
	select {
	case err := <-runDone:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run blocked in a write to a full pipe after its context ended")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run took %v to end", d)
	}
	st := u.s.Stats()
	if st.OutLost == 0 || st.TX != st.Written+st.OutLost {
		t.Errorf("stats %+v", st)
	}
	// The deadline was only for the end: the writer is usable again.
	if _, err := w.Write([]byte{}); err != nil {
		t.Errorf("pipe left with a deadline: %v", err)
	}
}

// TestSerialFinalFlush: output the guest wrote just before the end reaches
// a writer that takes it.
func TestSerialFinalFlush(t *testing.T) {
	pr, pw := io.Pipe()
	got := make(chan []byte)
	go func() { b, _ := io.ReadAll(pr); got <- b }()
	u := newUART(t, SerialConfig{Out: pw})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { u.s.Run(ctx); close(runDone) }()
	msg := bytes.Repeat([]byte("0123456789abcdef"), 2000)
	printk(u, msg)
	cancel()
	<-runDone
	pw.Close()
	if b := <-got; !bytes.Equal(b, msg) {
		t.Fatalf("writer got %d bytes, want %d", len(b), len(msg))
	}
	if st := u.s.Stats(); st.OutLost != 0 || st.Written != uint64(len(msg)) {
		t.Errorf("stats %+v", st)
	}
}

// TestSerialStallRecovers: when a stalled Write returns, output flows
// again, throttled and lossless.
func TestSerialStallRecovers(t *testing.T) {
	w := newStuckWriter()
	u := newUART(t, SerialConfig{Out: w, OutBuffer: 64, StallTimeout: 30 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go u.s.Run(ctx)
	u.out(uartRBR, '1')
	<-w.entered
	time.Sleep(60 * time.Millisecond)
	printk(u, []byte("dropped"))
	close(w.gate)
	deadline := time.Now().Add(5 * time.Second)
	for u.s.Stats().Written < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	before := u.s.Stats()
	msg := bytes.Repeat([]byte("k"), 500)
	printk(u, msg)
	u.s.Flush()
	st := u.s.Stats()
	if st.Written-before.Written != 500+(before.TX-before.Written-before.OutLost) || st.OutLost != before.OutLost {
		t.Errorf("after recovery: before %+v after %+v", before, st)
	}
}

// TestSerialInputBuffer: host input beyond the FIFO waits in the input
// buffer and reaches the guest in order as it reads.
func TestSerialInputBuffer(t *testing.T) {
	u := newUART(t, SerialConfig{InBuffer: 32})
	// FIFOs off at reset: one byte in the FIFO, the rest buffered.
	if n := u.s.Input([]byte("hello, world")); n != 12 {
		t.Fatalf("Input took %d", n)
	}
	u.out(uartIIR, fcrEnable|fcrClearRX) // Linux clears the FIFO at startup
	if n := u.s.Input(bytes.Repeat([]byte{'!'}, 100)); n != 16+32-12+1 {
		t.Errorf("Input took %d with FIFO and buffer nearly full", n)
	}
	if n := u.s.Inject([]byte("lost")); n != 0 {
		t.Errorf("Inject into a full buffer took %d", n)
	}
	if st := u.s.Stats(); st.InDropped != 4 {
		t.Errorf("InDropped %d", st.InDropped)
	}
	var got []byte
	for u.in(uartLSR)&lsrDR != 0 {
		got = append(got, u.in(uartRBR))
	}
	want := "ello, world" + string(bytes.Repeat([]byte{'!'}, 37))
	if string(got) != want {
		t.Errorf("guest read %q, want %q", got, want)
	}
	// Loopback disconnects the host; leaving it delivers what waits.
	u.out(uartMCR, mcrLoop)
	if n := u.s.Inject([]byte("q")); n != 0 {
		t.Error("Inject accepted in loopback")
	}
	u.out(uartMCR, 0)
	u.s.Input([]byte("ok"))
	if a, b := u.in(uartRBR), u.in(uartRBR); a != 'o' || b != 'k' {
		t.Errorf("read %q%q", a, b)
	}
}

// TestSerialInjectNeverWaits: a source fed through Inject keeps being read
// whatever the guest does: a guest that never reads costs dropped bytes,
// never a blocked sender.
func TestSerialInjectNeverWaits(t *testing.T) {
	u := newUART(t, SerialConfig{InBuffer: 8})
	done := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ {
			u.s.Inject([]byte{'k'})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Inject blocked on a guest that does not read")
	}
	if st := u.s.Stats(); st.RX != 9 || st.InDropped != 10000-9 {
		t.Errorf("stats %+v", st)
	}
}
