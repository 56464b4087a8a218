package main

import (
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/corral-vmm/corral/internal/console"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// cliConsole is the guest console's host side for corral run.
type cliConsole struct {
	out io.Writer // Config.Console
	in  io.Reader // Config.ConsoleIn: a non-terminal stdin, passed through

	tty     *os.File // stdin, a terminal in raw mode, read by startKeys; nil otherwise
	ttyOut  *os.File // our non-blocking copy of stdout when it is that terminal
	stderr  io.Writer
	mu      sync.Mutex
	restore func() // puts the terminal back; safe to call often and from any goroutine
}

// setupConsole puts a terminal stdin in raw mode, or passes non-terminal
// stdio through. The caller must call restore on every way out; it touches
// only the terminal's termios: the descriptors' blocking mode is never
// changed (reads and writes go through private non-blocking copies), so a
// crash cannot leave the shell with a non-blocking terminal.
func setupConsole(stdin io.Reader, stdout, stderr io.Writer) (*cliConsole, error) {
	c := &cliConsole{in: stdin, out: stdout, stderr: stderr, restore: func() {}}
	f, isFile := stdin.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return c, nil
	}
	fd := int(f.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return nil, fmt.Errorf("raw mode on standard input: %w", err)
	}
	restored := false
	c.restore = func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !restored {
			restored = true
			_ = term.Restore(fd, state)
		}
	}
	c.in, c.tty = nil, f
	if o, ok := stdout.(*os.File); ok && sameTerminal(f, o) {
		// Raw mode turned off the tty's LF -> CR LF output processing.
		w := io.Writer(o)
		if pf, err := console.Reopen(o, os.O_WRONLY); err == nil {
			c.ttyOut, w = pf, pf // with deadlines: never holds the VMM's end
		}
		c.out = console.NewCRLFWriter(w)
	}
	return c, nil
}

// sameTerminal says whether a and b are the same terminal device.
func sameTerminal(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Mode&unix.S_IFMT == unix.S_IFCHR && sb.Mode&unix.S_IFMT == unix.S_IFCHR && sa.Rdev == sb.Rdev
}

// startKeys reads the terminal, if stdin is one, through the Ctrl-A escape
// filter and hands the keys to sink (Machine.ConsoleInput, which never
// blocks), so Ctrl-A x is seen whatever the guest does. stop ends the
// reader and waits for it.
func (c *cliConsole) startKeys(sink io.Writer, quit func()) (stop func(), err error) {
	if c.tty == nil {
		return func() {}, nil
	}
	in, err := console.NewInput(c.tty)
	if err != nil {
		return nil, err
	}
	help := func() {
		fmt.Fprint(c.stderr, "\r\n[corral] Ctrl-A x: quit   Ctrl-A Ctrl-A: send Ctrl-A   Ctrl-A h: this help\r\n")
	}
	esc := newEscapeReader(in, quit, help)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			n, err := esc.Read(buf)
			if n > 0 {
				_, _ = sink.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}()
	return func() {
		in.Stop()
		<-done
		in.Release()
	}, nil
}

// close releases the private terminal copy; call it after the machine ended.
func (c *cliConsole) close() {
	if c.ttyOut != nil {
		_ = c.ttyOut.Close()
	}
}
