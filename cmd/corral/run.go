package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/corral-vmm/corral"
	"github.com/corral-vmm/corral/internal/gomaxprocs"
	"golang.org/x/sys/unix"
)

// runOptions is what `corral run`'s flags set.
type runOptions struct {
	cfg              corral.Config
	memory, logLevel string
	sandbox          *sandboxFlags
	restore          string // --restore: a snapshot directory
	snapshotDir      string // --snapshot-dir: where corral snapshot may write
}

// newRunFlags defines `corral run`'s flags on a new FlagSet that reports to
// stderr; parsing it fills the returned options. The help test walks it to
// check that usageText documents every flag.
func newRunFlags(stderr io.Writer) (*flag.FlagSet, *runOptions) {
	fs := flag.NewFlagSet("corral run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usageText) }
	o := &runOptions{}
	cfg := &o.cfg
	fs.StringVar(&cfg.Kernel, "kernel", "", "guest kernel")
	fs.StringVar(&cfg.Initrd, "initrd", "", "initial ramdisk")
	fs.StringVar(&cfg.Cmdline, "cmdline", "", "kernel command line")
	addMachineFlags(fs, cfg, &o.memory)
	fs.BoolVar(&cfg.NoACPI, "no-acpi", false, "no ACPI tables")
	fs.StringVar(&o.logLevel, "log", "warn", "log level")
	addInventoryFlags(fs, cfg)
	o.sandbox = addSandboxFlags(fs)
	fs.DurationVar(&cfg.TTL, "ttl", 0, "how long the VM may run")
	fs.StringVar(&o.restore, "restore", "", "restore the snapshot in DIR instead of booting")
	fs.StringVar(&o.snapshotDir, "snapshot-dir", "", "directory under which corral snapshot may write snapshots of this VM")
	fs.Func("share", "virtio-9p share of a host directory PATH:TAG[,ro] (repeatable)", func(v string) error {
		sh, err := corral.ParseShare(v)
		if err != nil {
			return err
		}
		cfg.Shares = append(cfg.Shares, sh)
		return nil
	})
	fs.Func("vsock", "virtio-vsock device: on, or cid=N[,uds=PATH]", func(v string) error {
		vs, err := parseVsock(v)
		if err != nil {
			return err
		}
		cfg.Vsock = &vs
		return nil
	})
	return fs, o
}

// addMachineFlags defines the machine flags `corral run` and `corral
// exec` share: --cpus, --memory (into memory, for checkMachineSize), and
// the repeatable --net and --disk.
func addMachineFlags(fs *flag.FlagSet, cfg *corral.Config, memory *string) {
	fs.IntVar(&cfg.CPUs, "cpus", corral.DefaultCPUs, "vCPUs")
	fs.StringVar(memory, "memory", corral.FormatSize(corral.DefaultMemory), "guest RAM")
	fs.Func("net", "virtio-net NIC on a TAP (repeatable)", func(v string) error {
		n, err := corral.ParseNet(v)
		if err != nil {
			return err
		}
		cfg.Nets = append(cfg.Nets, n)
		return nil
	})
	fs.Func("disk", "virtio-blk disk PATH[,ro][,serial=ID][,queues=N][,direct] (repeatable): queues=N request queues (default one per vCPU), direct opens the image with O_DIRECT", func(v string) error {
		d, err := corral.ParseDisk(v)
		if err != nil {
			return err
		}
		cfg.Disks = append(cfg.Disks, d)
		return nil
	})
}

// checkMachineSize checks --cpus and sets cfg.Memory from --memory. The
// library reads 0 as "the default"; on the command line a 0 is a mistake,
// not a request for the default.
func checkMachineSize(cfg *corral.Config, memory string) error {
	if cfg.CPUs < 1 || cfg.CPUs > corral.MaxCPUs {
		return fmt.Errorf("--cpus %d: must be between 1 and %d", cfg.CPUs, corral.MaxCPUs)
	}
	var err error
	if cfg.Memory, err = corral.ParseSize(memory); err != nil {
		return fmt.Errorf("--memory: %v", err)
	}
	if cfg.Memory == 0 {
		return fmt.Errorf("--memory %s: guest RAM cannot be 0", memory)
	}
	return nil
}

// parseVsock parses --vsock: "on" for the defaults, or comma-separated
// cid=N and uds=PATH.
func parseVsock(s string) (corral.Vsock, error) {
	var v corral.Vsock
	if s == "on" {
		return v, nil
	}
	for _, p := range strings.Split(s, ",") {
		k, val, _ := strings.Cut(p, "=")
		switch {
		case k == "cid" && val != "":
			cid, err := strconv.ParseUint(val, 10, 32)
			if err != nil {
				return v, fmt.Errorf("vsock %q: cid: %w", s, err)
			}
			v.CID = cid
		case k == "uds" && val != "":
			v.UDSPath = val
		default:
			return v, fmt.Errorf("vsock %q: unknown option %q (want on, or cid=N and uds=PATH)", s, p)
		}
	}
	return v, nil
}

// runCommand implements `corral run`.
func runCommand(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs, opts := newRunFlags(stderr)
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
	cfg, memory, logLevel := opts.cfg, opts.memory, opts.logLevel
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		fmt.Fprintf(stderr, "corral run: --log: %v\n", err)
		return exitUsage
	}
	if opts.restore != "" {
		if err := checkRestoreFlags(fs); err != nil {
			fmt.Fprintf(stderr, "corral run: %v\n", err)
			return exitUsage
		}
		opts.sandbox.extraRead = append(opts.sandbox.extraRead, opts.restore)
	} else if err := checkMachineSize(&cfg, memory); err != nil {
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		return exitUsage
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if opts.snapshotDir != "" {
		if err := os.MkdirAll(opts.snapshotDir, 0o700); err != nil {
			fmt.Fprintf(stderr, "corral run: --snapshot-dir: %v\n", err)
			return exitUsage
		}
		opts.sandbox.extraWrite = append(opts.sandbox.extraWrite, opts.snapshotDir)
	}
	if opts.restore == "" {
		if err := cfg.Validate(); err != nil {
			fmt.Fprintf(stderr, "corral run: %v\n", err)
			return exitUsage
		}
		if host, err := hostRAM(); err == nil && cfg.Memory > host {
			// Guest RAM is mapped lazily, so this can run; but a guest that
			// touches it all will have the host swap or kill something.
			fmt.Fprintf(stderr, "corral run: warning: --memory %s is more than the host's %d MiB of RAM\n", memory, host>>20)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	con, err := setupConsole(stdin, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "corral run: console: %v\n", err)
		return exitVMMFailure
	}
	// Deferred, so a panic on this goroutine also gives the terminal back;
	// the second stopping signal and SIGQUIT restore it from the watcher.
	defer con.restore()
	defer con.close()
	sw := watchSignals(signalActions{
		stop:    func(s syscall.Signal) { cancel(fmt.Errorf("signal %v", s)) },
		restore: con.restore,
		exit:    os.Exit,
		raise:   raiseDefault,
	})
	defer sw.stop()
	cfg.Console = con.out
	cfg.ConsoleIn = con.in

	var m *corral.Machine
	if opts.restore != "" {
		m, err = corral.Restore(ctx, opts.restore, restoreConfig(&cfg))
	} else {
		m, err = corral.New(cfg)
	}
	if err != nil {
		con.restore()
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		if errors.Is(err, corral.ErrConfig) {
			return exitUsage
		}
		return exitVMMFailure
	}
	// Every device, TAP and file is open; the vCPUs have not run.
	mcfg := m.Config()
	gomaxprocs.Reserve(mcfg.CPUs) // this process is the VM's
	if err := applySandbox(opts.sandbox, &mcfg, cfg.Logger); err != nil {
		m.Close()
		con.restore()
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		return exitVMMFailure
	}
	if err := m.Start(ctx); err != nil {
		m.Close()
		con.restore()
		fmt.Fprintf(stderr, "corral run: %v\n", err)
		return exitVMMFailure
	}
	stopKeys, err := con.startKeys(m.ConsoleInput(), func() { cancel(errQuit) })
	if err != nil {
		m.Close()
		con.restore()
		fmt.Fprintf(stderr, "corral run: console: %v\n", err)
		return exitVMMFailure
	}
	exit, _ := m.Wait() // a VMM failure is exit.Err, which exitStatus reports
	stopKeys()
	con.restore()
	return exitStatus(exit, sw.signal(), stderr)
}

// checkRestoreFlags refuses, with --restore, the flags that describe the
// guest: the snapshot's guest is restored as it was.
func checkRestoreFlags(fs *flag.FlagSet) error {
	var bad []string
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "kernel", "initrd", "cmdline", "cpus", "memory", "no-acpi":
			bad = append(bad, "--"+f.Name)
		}
	})
	if len(bad) > 0 {
		return fmt.Errorf("--restore: %s describe the guest, which the snapshot holds", strings.Join(bad, ", "))
	}
	return nil
}

// restoreConfig takes a restored machine's host side from the flags:
// --net and --disk, when given, replace the saved NICs' host sides and
// the disks' paths; --share gives saved shares new directories by tag;
// --vsock uds=PATH a socket.
func restoreConfig(cfg *corral.Config) corral.RestoreConfig {
	rc := corral.RestoreConfig{
		Name: cfg.Name, Labels: cfg.Labels, StateDir: cfg.StateDir, NoInventory: cfg.NoInventory, TTL: cfg.TTL,
		Console: cfg.Console, ConsoleIn: cfg.ConsoleIn, Logger: cfg.Logger, KVMDevice: cfg.KVMDevice,
		Nets: cfg.Nets, Disks: cfg.Disks, Shares: cfg.Shares, VerifyMemory: true,
	}
	if cfg.Vsock != nil {
		rc.VsockUDSPath = cfg.Vsock.UDSPath
	}
	return rc
}

// errQuit is the cause of a stop requested with Ctrl-A x.
var errQuit = errors.New("console quit (Ctrl-A x)")

// exitStatus maps how the machine ended to corral's exit status (see the
// constants in main.go), and says on stderr why when it is not the guest's
// own choice. A *corral.VCPUError's register dump follows its one-line
// message.
func exitStatus(exit corral.Exit, sig syscall.Signal, stderr io.Writer) int {
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
		return exitOK // Ctrl-A x
	case corral.ExitGuestFault:
		fmt.Fprintf(stderr, "corral run: guest fault: %v\n", exit.Err)
		printDump(stderr, exit.Err)
		return exitGuestFault
	default:
		fmt.Fprintf(stderr, "corral run: machine failed: %v\n", exit.Err)
		printDump(stderr, exit.Err)
		return exitVMMFailure
	}
}

// printDump prints the vCPU state carried by err, if any.
func printDump(w io.Writer, err error) {
	var ve *corral.VCPUError
	if errors.As(err, &ve) {
		fmt.Fprintln(w, ve.Dump())
	}
}

// hostRAM returns the host's total RAM in bytes.
func hostRAM() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, fmt.Errorf("sysinfo: %w", err)
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}
