package main

import (
	"bytes"
	"io"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-vmm/corral/devices"
	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair, skipping the test without one.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("TIOCSPTLCK: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("TIOCGPTN: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); m.Close() })
	return m, s
}

func isRaw(t *testing.T, f *os.File) bool {
	t.Helper()
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return tio.Lflag&unix.ICANON == 0
}

func nonblocking(t *testing.T, f *os.File) bool {
	t.Helper()
	fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fl&unix.O_NONBLOCK != 0
}

// injectSink is Machine.ConsoleInput over a bare Serial.
type injectSink struct{ s *devices.Serial }

func (w injectSink) Write(p []byte) (int, error) { w.s.Inject(p); return len(p), nil }

// TestEscapeWithDeafGuest (issue 17, defect 3): Ctrl-A x quits even when
// the guest does not read its UART (halted, panicked, still booting: the
// FIFO is off at reset and holds one byte).
func TestEscapeWithDeafGuest(t *testing.T) {
	master, slave := openPTY(t)
	var stderr bytes.Buffer
	con, err := setupConsole(slave, io.Discard, &stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer con.restore()
	if !isRaw(t, slave) {
		t.Fatal("terminal not in raw mode")
	}
	if nonblocking(t, slave) {
		t.Error("setupConsole made the terminal's descriptor non-blocking")
	}
	serial := devices.NewSerial(devices.SerialConfig{InBuffer: -1}) // nothing held past the FIFO
	var quits atomic.Int32
	quit := make(chan struct{})
	stop, err := con.startKeys(injectSink{serial}, func() {
		if quits.Add(1) == 1 {
			close(quit)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range []string{"\r", "\r", "a", "\x01", "x"} {
		master.Write([]byte(keys))
		time.Sleep(30 * time.Millisecond) // separate reads, as typed
	}
	select {
	case <-quit:
	case <-time.After(5 * time.Second):
		t.Fatal("Ctrl-A x ignored while the guest does not read")
	}
	stop()
	if st := serial.Stats(); st.RX != 1 || st.InDropped != 2 {
		t.Errorf("stats %+v: want the first Enter in the FIFO, the rest dropped", st)
	}
	if nonblocking(t, slave) {
		t.Error("the terminal's descriptor is non-blocking")
	}
	con.restore()
	if isRaw(t, slave) {
		t.Error("terminal still raw after restore")
	}
}

// TestKeysStop: the terminal reader ends when asked, with no key typed.
func TestKeysStop(t *testing.T) {
	_, slave := openPTY(t)
	con, err := setupConsole(slave, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer con.restore()
	stop, err := con.startKeys(io.Discard, func() {})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("terminal reader did not stop")
	}
}

// TestRawOutputCRLF (defect 6): guest output to the raw terminal gets CR
// LF for a bare LF; output elsewhere is untouched.
func TestRawOutputCRLF(t *testing.T) {
	master, slave := openPTY(t)
	con, err := setupConsole(slave, slave, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer con.close()
	defer con.restore()
	con.out.Write([]byte("a\nb\r"))
	con.out.Write([]byte("\nc\n"))
	want := "a\r\nb\r\nc\r\n"
	got := make([]byte, 0, 64)
	buf := make([]byte, 64)
	master.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < len(want) {
		n, err := master.Read(buf)
		if err != nil {
			t.Fatalf("read %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != want {
		t.Errorf("terminal got %q, want %q", got, want)
	}
	// stdout redirected (a pipe): bytes pass as they are.
	_, slave2 := openPTY(t)
	var out bytes.Buffer
	con2, err := setupConsole(slave2, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	defer con2.restore()
	con2.out.Write([]byte("a\nb"))
	if out.String() != "a\nb" {
		t.Errorf("redirected output %q", out.String())
	}
}
