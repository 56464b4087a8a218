package corral

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
	"golang.org/x/sys/unix"
)

// newConsolePlatform is the console part of a platform, without KVM.
func newConsolePlatform(out io.Writer, in io.Reader) (*platform, error) {
	ctx, cancel := context.WithCancel(context.Background())
	p := &platform{ctx: ctx, cancel: cancel, log: slog.New(slog.DiscardHandler)}
	if err := p.createConsole(out, in, devices.NoIRQ{}); err != nil {
		cancel()
		return nil, err
	}
	return p, nil
}

// waitGoroutines waits until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blockingPipe is a pipe whose read end is a plain blocking descriptor, as
// a shell gives a process: no poller, no deadlines.
func blockingPipe(t *testing.T) (r, w *os.File) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	r, w = os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w")
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// TestConsoleInputGoroutinesEnd (issue 10): whatever ConsoleIn is, the
// input goroutine ends with the machine, even when the reader never
// returns data, and the caller's reader is left as it was.
func TestConsoleInputGoroutinesEnd(t *testing.T) {
	base := runtime.NumGoroutine()
	br, bw := blockingPipe(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	inputs := map[string]io.Reader{
		"blocking pipe": br,
		"polled pipe":   pr,
		"net.Pipe":      c1,
		"strings":       strings.NewReader("typed ahead"),
	}
	if m, s, err := openPTY(); err == nil {
		defer m.Close()
		defer s.Close()
		inputs["pty"] = s
	}
	for i := 0; i < 3; i++ {
		for name, in := range inputs {
			p, err := newConsolePlatform(io.Discard, in)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			p.start()
			time.Sleep(5 * time.Millisecond) // let the reader block
			done := make(chan error, 1)
			go func() { done <- p.close() }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatalf("%s: close blocked on the console reader", name)
			}
		}
	}
	waitGoroutines(t, base)
	// The callers' readers still work, in their own mode.
	if fl, _ := unix.FcntlInt(br.Fd(), unix.F_GETFL, 0); fl&unix.O_NONBLOCK != 0 {
		t.Error("the caller's blocking pipe was made non-blocking")
	}
	bw.Write([]byte("x"))
	pw.Write([]byte("y"))
	b := make([]byte, 1)
	if n, err := br.Read(b); n != 1 || b[0] != 'x' {
		t.Errorf("caller's blocking pipe: %d %v", n, err)
	}
	if n, err := pr.Read(b); n != 1 || b[0] != 'y' {
		t.Errorf("caller's polled pipe: %d %v", n, err)
	}
	go c2.Write([]byte("z"))
	c1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c1.Read(b); n != 1 || b[0] != 'z' {
		t.Errorf("caller's net.Conn left with a deadline: %d %v", n, err)
	}
}

// TestConsoleInputRefused: a reader the machine could not unblock is a
// configuration error, not a goroutine that outlives the machine; such
// input goes through ConsoleInput, which never blocks.
func TestConsoleInputRefused(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	if _, err := newConsolePlatform(io.Discard, pr); !errors.Is(err, ErrConfig) || !errors.Is(err, console.ErrNotStoppable) {
		t.Fatalf("io.Pipe as ConsoleIn: %v, want ErrConfig", err)
	}
	p, err := newConsolePlatform(io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.start()
	m := &Machine{plat: p}
	// The caller pumps its reader itself; the guest never reads.
	done := make(chan error, 1)
	go func() { _, err := io.Copy(m.ConsoleInput(), pr); done <- err }()
	for i := 0; i < 100; i++ {
		if _, err := pw.Write([]byte(strings.Repeat("k", 100))); err != nil {
			t.Fatal(err)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.close()
	st := m.ConsoleStats()
	if st.In+st.InDropped != 10000 || st.InDropped == 0 {
		t.Errorf("stats %+v", st)
	}
}

// gatedWriter blocks every Write until released; no deadlines.
type gatedWriter struct {
	once    sync.Once
	entered chan struct{}
	gate    chan struct{}
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.gate
	return len(p), nil
}

// guestPrint writes msg to COM1 as Linux's console does, with a bounded
// wait for THRE per byte.
func guestPrint(s *devices.Serial, msg []byte) {
	lsr := []byte{0}
	for _, b := range msg {
		for deadline := time.Now().Add(10 * time.Millisecond); time.Now().Before(deadline); {
			s.Read(5, lsr)
			if lsr[0]&0x20 != 0 {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
		s.Write(0, []byte{b})
	}
}

// TestConsoleBlockedWriterClose (issue 17): a Console whose Write blocks
// does not hold the machine's end, with or without deadlines.
func TestConsoleBlockedWriterClose(t *testing.T) {
	t.Run("no deadline", func(t *testing.T) {
		w := &gatedWriter{entered: make(chan struct{}), gate: make(chan struct{})}
		defer close(w.gate)
		p, err := newConsolePlatform(w, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.start()
		guestPrint(p.serial, []byte("hello\n"))
		<-w.entered
		start := time.Now()
		p.close()
		if d := time.Since(start); d > p.serial.FlushTimeout()+time.Second {
			t.Errorf("close took %v with a blocked writer", d)
		}
	})
	t.Run("fifo nobody reads", func(t *testing.T) {
		base := runtime.NumGoroutine()
		r, w := blockingPipe(t) // the caller's end: blocking, no poller
		p, err := newConsolePlatform(w, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p.outFile == nil {
			t.Fatal("an *os.File pipe Console was not reopened non-blocking")
		}
		p.start()
		guestPrint(p.serial, make([]byte, 200<<10)) // fills the pipe and the buffers
		start := time.Now()
		p.close()
		if d := time.Since(start); d > p.serial.FlushTimeout()+time.Second {
			t.Errorf("close took %v with a full pipe", d)
		}
		waitGoroutines(t, base)
		st := p.serial.Stats()
		if st.OutLost == 0 || st.TX != st.Written+st.OutLost {
			t.Errorf("stats %+v", st)
		}
		// The caller's descriptor is open and blocking as before.
		if fl, err := unix.FcntlInt(w.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
			t.Errorf("caller's pipe: flags %#x, %v", fl, err)
		}
		_ = r
	})
}

// TestStopWithBlockedConsole (issue 17, KVM): Stop ends a machine whose
// Console writer blocks forever.
func TestStopWithBlockedConsole(t *testing.T) {
	testenv.MustHaveKVM(t)
	w := &gatedWriter{entered: make(chan struct{}), gate: make(chan struct{})}
	defer close(w.gate)
	m, err := New(Config{Kernel: guests.BuildT(t, "spin"), Console: w})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.entered:
	case <-time.After(30 * time.Second):
		t.Fatal("guest printed nothing")
	}
	m.Stop()
	select {
	case <-m.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not end a machine whose console blocks")
	}
	if e, _ := m.Wait(); e.Reason != ExitStopped {
		t.Errorf("exit %v", e)
	}
}

// openPTY opens a pseudo-terminal pair.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		return nil, nil, err
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}
