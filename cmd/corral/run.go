package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/corral-vmm/corral"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// runCommand implements `corral run`.
func runCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("corral run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	var cfg corral.Config
	var memory, logLevel string
	fs.StringVar(&cfg.Kernel, "kernel", "", "guest kernel")
	fs.StringVar(&cfg.Initrd, "initrd", "", "initial ramdisk")
	fs.StringVar(&cfg.Cmdline, "cmdline", "", "kernel command line")
	fs.IntVar(&cfg.CPUs, "cpus", corral.DefaultCPUs, "vCPUs")
	fs.StringVar(&memory, "memory", corral.FormatSize(corral.DefaultMemory), "guest RAM")
	fs.BoolVar(&cfg.NoACPI, "no-acpi", false, "no ACPI tables")
	fs.StringVar(&logLevel, "log", "warn", "log level")
	fs.Func("net", "virtio-net NIC on a TAP (repeatable)", func(v string) error {
		n, err := corral.ParseNet(v)
		if err != nil {
			return err
		}
		cfg.Nets = append(cfg.Nets, n)
		return nil
	})
	fs.Func("disk", "virtio-blk disk PATH[,ro][,serial=ID] (repeatable)", func(v string) error {
		d, err := corral.ParseDisk(v)
		if err != nil {
			return err
		}
		cfg.Disks = append(cfg.Disks, d)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "corral run: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	var err error
	if cfg.Memory, err = corral.ParseSize(memory); err != nil {
		fmt.Fprintf(stderr, "corral run: --memory: %v\n", err)
		return exitUsage
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "corral run: --log: %v\n", err)
		return exitUsage
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		return exitUsage
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	var gotSignal syscall.Signal
	go func() {
		select {
		case s := <-sigs:
			gotSignal = s.(syscall.Signal)
			cancel(fmt.Errorf("signal %v", s))
		case <-ctx.Done():
		}
	}()

	console, restore, err := setupConsole(stdin, stdout, stderr, func() { cancel(errQuit) })
	if err != nil {
		fmt.Fprintf(stderr, "corral run: console: %v\n", err)
		return exitVMMFailure
	}
	defer restore()
	cfg.Console = console.out
	cfg.ConsoleIn = console.in

	m, err := corral.New(cfg)
	if err != nil {
		restore()
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		if errors.Is(err, corral.ErrConfig) {
			return exitUsage
		}
		return exitVMMFailure
	}
	if err := m.Start(ctx); err != nil {
		m.Close()
		restore()
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		return exitVMMFailure
	}
	exit := m.Wait()
	restore()
	return exitStatus(exit, context.Cause(ctx), gotSignal, stderr)
}

// errQuit is the cause of a stop requested with Ctrl-A x.
var errQuit = errors.New("console quit (Ctrl-A x)")

// exitStatus maps how the machine ended to corral's exit status.
func exitStatus(exit corral.Exit, cause error, sig syscall.Signal, stderr io.Writer) int {
	switch exit.Reason {
	case corral.ExitDebug:
		return int(exit.Code)
	case corral.ExitPowerOff, corral.ExitReset:
		return exitOK
	case corral.ExitStopped:
		if sig != 0 {
			fmt.Fprintf(stderr, "corral run: stopped by %v\n", sig)
			return 128 + int(sig)
		}
		if errors.Is(cause, errQuit) {
			return exitOK
		}
		return exitOK
	default:
		fmt.Fprintf(stderr, "corral run: machine failed: %v\n", exit.Err)
		return exitVMMFailure
	}
}

// consoleIO is the guest console's host side.
type consoleIO struct {
	in  io.Reader
	out io.Writer
}

// setupConsole puts a terminal stdin in raw mode with the Ctrl-A escape, or
// passes non-terminal stdio through. restore undoes it and may be called
// more than once.
func setupConsole(stdin io.Reader, stdout, stderr io.Writer, quit func()) (consoleIO, func(), error) {
	f, isFile := stdin.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return consoleIO{in: stdin, out: stdout}, func() {}, nil
	}
	fd := int(f.Fd())
	state, err := term.MakeRaw(fd)
	if err != nil {
		return consoleIO{}, nil, fmt.Errorf("raw mode on standard input: %w", err)
	}
	// A non-blocking descriptor joins Go's poller, so reads can be given a
	// deadline and the console reader stops when the machine ends.
	_ = unix.SetNonblock(fd, true)
	polled := os.NewFile(uintptr(fd), f.Name())
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = unix.SetNonblock(fd, false)
			_ = term.Restore(fd, state)
		}
	}
	help := func() {
		fmt.Fprint(stderr, "\r\n[corral] Ctrl-A x: quit   Ctrl-A Ctrl-A: send Ctrl-A   Ctrl-A h: this help\r\n")
	}
	in := newEscapeReader(deadlineReader{polled}, quit, help)
	return consoleIO{in: in, out: stdout}, restore, nil
}

// deadlineReader keeps the terminal's SetReadDeadline visible through the
// escape filter, so the machine can unblock its console reader at the end.
type deadlineReader struct{ f *os.File }

func (d deadlineReader) Read(p []byte) (int, error)        { return d.f.Read(p) }
func (d deadlineReader) SetReadDeadline(t time.Time) error { return d.f.SetReadDeadline(t) }
