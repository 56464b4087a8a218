// Package corral is the public Go API of the Corral virtual machine monitor:
// describe a machine in a Config, create it with New, run it with Start,
// and learn how it ended from Wait.
//
//	m, err := corral.New(corral.Config{Kernel: "vmlinux", Cmdline: "console=ttyS0", Console: os.Stdout})
//	if err != nil { ... }
//	if err := m.Start(ctx); err != nil { ... }
//	exit, err := m.Wait() // power-off, reset, debug-exit code, guest fault, Stop; err: the VMM failed
//
// Many machines may run in one process; each owns its KVM file descriptors,
// guest memory and goroutines, and releases them all when it ends.
//
// Each vCPU holds a Go P (a GOMAXPROCS slot) while it is in KVM_RUN, until
// the runtime takes it back a sysmon round later, so a program whose
// GOMAXPROCS is not above the vCPUs it runs makes its devices wait for
// those rounds. The package leaves GOMAXPROCS to the program; corral run,
// corral exec and the containerd shim raise it to at least vCPUs + 1
// unless the GOMAXPROCS environment variable is set.
package corral

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/internal/console"
)

// Defaults for the zero values of Config.
const (
	DefaultCPUs   = 1
	DefaultMemory = 256 << 20
	// MaxCPUs bounds the vCPU count: the MP table and the xAPIC IDs that
	// Corral hands out fit in one byte, and one ID goes to the IOAPIC.
	MaxCPUs = 254
	// MaxMemory bounds guest RAM (1 TiB).
	MaxMemory = 1 << 40
)

// ErrConfig is wrapped by every error Config.Validate returns.
var ErrConfig = errors.New("invalid machine configuration")

// Config describes a machine. The zero value of each optional field selects
// the documented default.
type Config struct {
	// Name labels the machine in logs and inventories; empty means its ID.
	// It is printable, without spaces (inventory.ValidateName).
	Name string
	// Labels are KEY=VALUE pairs recorded in the inventory and the audit
	// trail (corral ps --filter label=K=V).
	Labels map[string]string
	// StateDir is the inventory's state directory, where Start registers
	// the machine; empty means inventory.StateDir() ($CORRAL_STATE_DIR,
	// /run/corral for root, else $XDG_RUNTIME_DIR/corral).
	StateDir string
	// NoInventory leaves the machine out of the inventory and the audit
	// trail (for library users who keep their own).
	NoInventory bool
	// TTL, when positive, is how long the machine may run: then it is
	// asked to power off and stopped TTLStopTimeout later (vm.expired in
	// the audit trail). Measured on the monotonic boot-time clock, never
	// the calendar.
	TTL time.Duration

	// Kernel is the path of the guest kernel: a bzImage or an ELF with a
	// PVH entry note (vmlinux, or a test guest). Required.
	Kernel string
	// Initrd is the path of an initial ramdisk, or empty.
	Initrd string
	// Cmdline is the kernel command line.
	Cmdline string

	// CPUs is the number of vCPUs (default 1, at most MaxCPUs).
	CPUs int
	// Memory is guest RAM in bytes (default 256 MiB); a multiple of 4 KiB
	// and at least boot.MinRAM.
	Memory uint64

	// Console receives what the guest writes to its serial port (COM1);
	// nil discards it. Output is buffered (64 KiB); a Console that keeps up
	// gets every byte. One whose Write has not returned for a second is
	// stalled: the guest runs on and output is dropped, counted in
	// ConsoleStats.OutLost. When the machine ends, buffered output is
	// written for at most a second. An *os.File (terminal, pipe, FIFO) is
	// written through a private non-blocking copy and a writer with
	// SetWriteDeadline gets a deadline, so a blocked Write never holds
	// Stop, Wait or Close; another writer whose Write never returns keeps
	// one goroutine in it until it does (the machine does not wait).
	Console io.Writer
	// ConsoleIn, when set, is read for input to the serial port, waiting
	// for the guest to take it. It must be a reader the machine can stop
	// reading when it ends, so no goroutine outlives the machine: an
	// *os.File (terminals, pipes and FIFOs are read through a private
	// non-blocking copy; the caller's descriptor is untouched), a reader
	// with a working SetReadDeadline (given a past deadline at the end,
	// cleared after), or a *strings.Reader, *bytes.Reader or *bytes.Buffer.
	// New refuses other readers (an io.Pipe, a bufio.Reader) with
	// ErrConfig: read those yourself into Machine.ConsoleInput.
	ConsoleIn io.Reader

	// Disks are virtio-blk disks, in PCI slot order.
	Disks []Disk
	// Nets are virtio-net NICs, on the PCI bus after the disks. Creating or
	// configuring a TAP needs CAP_NET_ADMIN; a NIC on a handed-over File or
	// Backend (a socket pair, an attached TAP) needs no privilege.
	Nets []Net
	// Vsock, when set, adds a virtio-vsock device, on the PCI bus after the
	// NICs (see Vsock).
	Vsock *Vsock
	// Shares are host directories served over virtio-9p, one device each,
	// on the PCI bus after the NICs and the vsock device (see Share).
	Shares []Share

	// NoACPI leaves out the ACPI tables; guests then find their CPUs and
	// IOAPIC through the MP table alone, and cannot power off through ACPI.
	NoACPI bool

	// Logger receives the machine's structured logs; nil discards them.
	Logger *slog.Logger

	// KVMDevice is the KVM device path; empty means /dev/kvm.
	KVMDevice string
}

// Validate checks the configuration without touching KVM, so mistakes are
// reported before anything is created. Every error wraps ErrConfig and names
// the field at fault.
func (c *Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	if c.Kernel == "" {
		return bad("no kernel given")
	}
	if err := checkKernel(c.Kernel); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if c.Initrd != "" {
		if err := checkReadableFile("initrd", c.Initrd); err != nil {
			return bad("%v", err)
		}
	}
	if len(c.Cmdline)+1 > boot.CmdlineMax {
		return bad("command line is %d bytes, more than the %d the boot protocol allows", len(c.Cmdline), boot.CmdlineMax-1)
	}
	for i := 0; i < len(c.Cmdline); i++ {
		if c.Cmdline[i] == 0 {
			return bad("command line contains a NUL byte at offset %d", i)
		}
	}
	if cpus := c.cpus(); cpus < 1 || cpus > MaxCPUs {
		return bad("%d vCPUs: must be between 1 and %d", c.CPUs, MaxCPUs)
	}
	mem := c.memory()
	if mem < boot.MinRAM {
		return bad("memory %s is below the minimum of %s", FormatSize(mem), FormatSize(boot.MinRAM))
	}
	if mem > MaxMemory {
		return bad("memory %s is above the maximum of %s", FormatSize(mem), FormatSize(MaxMemory))
	}
	if mem%4096 != 0 {
		return bad("memory %d bytes is not a multiple of 4 KiB", mem)
	}
	if err := c.checkFits(mem); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return c.validateDevices()
}

// validateDevices checks what Validate checks beyond the kernel, the
// command line, vCPUs and memory: the devices and the host side. Restore
// uses it alone (a snapshot's guest side was checked when it was taken).
func (c *Config) validateDevices() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	for i, d := range c.Disks {
		if d.Path == "" {
			return bad("disk %d has no path", i)
		}
		if err := checkDisk(fmt.Sprintf("disk %d", i), d.Path); err != nil {
			return bad("%v", err)
		}
		if len(d.Serial) > 20 {
			return bad("disk %d: serial %q is longer than 20 bytes", i, d.Serial)
		}
		if err := d.checkQueues(); err != nil {
			return bad("disk %d: %v", i, err)
		}
	}
	for i := range c.Nets {
		if err := c.Nets[i].validate(); err != nil {
			return bad("net %d: %v", i, err)
		}
	}
	if c.ConsoleIn != nil {
		if err := console.CheckInput(c.ConsoleIn); err != nil {
			return bad("ConsoleIn: %v; push input with Machine.ConsoleInput instead", err)
		}
	}
	if c.Vsock != nil {
		if err := c.Vsock.validate(); err != nil {
			return bad("vsock: %v", err)
		}
	}
	if c.TTL < 0 {
		return bad("TTL %s is negative", c.TTL)
	}
	if err := c.validateInventory(); err != nil {
		return bad("%v", err)
	}
	if err := checkShares(c.Shares); err != nil {
		return bad("%v", err)
	}
	if n := len(c.Disks) + len(c.Nets) + c.vsockCount() + len(c.Shares); n > maxPCIDevices {
		return bad("%d devices: the PCI bus has room for %d", n, maxPCIDevices)
	}
	return nil
}

// maxPCIDevices is how many devices bus 0 holds besides the host bridge.
const maxPCIDevices = 31

func (c *Config) vsockCount() int {
	if c.Vsock != nil {
		return 1
	}
	return 0
}

func (c *Config) cpus() int {
	if c.CPUs == 0 {
		return DefaultCPUs
	}
	return c.CPUs
}

func (c *Config) memory() uint64 {
	if c.Memory == 0 {
		return DefaultMemory
	}
	return c.Memory
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// checkReadableFile reports a missing, unreadable, empty or non-regular file.
func checkReadableFile(what, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s %q is not a regular file", what, path)
	}
	if st.Size() == 0 {
		return fmt.Errorf("%s %q is empty", what, path)
	}
	return nil
}

// checkFits asks boot whether the kernel, command line and initrd fit
// together in mem bytes of RAM (the kernel's own command-line limit, room
// for the initrd), reading only their headers and sizes, so such mistakes
// are configuration errors found before KVM is opened.
func (c *Config) checkFits(mem uint64) error {
	k, err := os.Open(c.Kernel)
	if err != nil {
		return fmt.Errorf("kernel %q: %w", c.Kernel, err)
	}
	defer k.Close()
	st, err := k.Stat()
	if err != nil {
		return fmt.Errorf("kernel %q: %w", c.Kernel, err)
	}
	bc := boot.Config{Kernel: k, KernelSize: st.Size(), Cmdline: c.Cmdline, CPUs: c.cpus(), NoACPI: c.NoACPI}
	if c.Initrd != "" {
		f, err := os.Open(c.Initrd)
		if err != nil {
			return fmt.Errorf("initrd %q: %w", c.Initrd, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("initrd %q: %w", c.Initrd, err)
		}
		bc.Initrd, bc.InitrdSize = f, st.Size()
	}
	if err := boot.Check(bc, mem); err != nil {
		return fmt.Errorf("kernel %q: %w", c.Kernel, err)
	}
	return nil
}

// checkDisk reports a disk image that is missing, unreadable, empty, or
// neither a regular file nor a block device. A block device's size is where
// lseek to its end lands (stat reports 0 for it); virtio/blk sizes it so.
func checkDisk(what, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, path, err)
	}
	m := st.Mode()
	if !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return fmt.Errorf("%s %q is not a regular file or block device", what, path)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%s %q: size: %w", what, path, err)
	}
	if size == 0 {
		return fmt.Errorf("%s %q is empty", what, path)
	}
	return nil
}

// checkKernel reports a kernel file that is missing, unreadable or not a
// kernel Corral can boot, before any VM exists.
func checkKernel(path string) error {
	if err := checkReadableFile("kernel", path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("kernel %q: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("kernel %q: %w", path, err)
	}
	if _, err := boot.DetectKind(f, st.Size()); err != nil {
		return fmt.Errorf("kernel %q: %w", path, err)
	}
	return nil
}
