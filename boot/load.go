package boot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/corral-vmm/corral/guestmem"
)

// Sentinel errors wrapped by Load and DetectKind; callers branch on them with
// errors.Is. Every returned error also names the field or limit at fault.
var (
	// ErrNotKernel: the file is neither a bzImage nor an ELF kernel.
	ErrNotKernel = errors.New("boot: not a Linux bzImage or PVH ELF kernel")
	// ErrBadKernel: the file looks like a kernel but a header field is
	// truncated, corrupt or unsupported.
	ErrBadKernel = errors.New("boot: bad kernel image")
	// ErrNoPVHEntry: an ELF file without the XEN_ELFNOTE_PHYS32_ENTRY note.
	ErrNoPVHEntry = errors.New("boot: ELF kernel has no PVH entry note")
	// ErrNoRoom: the kernel, its working space or the initrd does not fit
	// in guest RAM.
	ErrNoRoom = errors.New("boot: does not fit in guest memory")
	// ErrBadConfig: the caller's Config is invalid (command line too long,
	// CPU count out of range, missing kernel, guest memory too small).
	ErrBadConfig = errors.New("boot: bad configuration")
)

// MaxCPUs is the most vCPUs the MP table and MADT can describe: APIC IDs
// 0..253 for the CPUs, 254 for the IOAPIC, 255 is the broadcast ID.
const MaxCPUs = 254

// Kind is the kernel image format Load detected.
type Kind int

// Kernel image formats.
const (
	KindUnknown Kind = iota
	KindBzImage      // Linux x86 boot protocol bzImage, entered in 64-bit mode
	KindPVH          // ELF with a PVH entry note, entered in 32-bit protected mode
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case KindBzImage:
		return "bzImage"
	case KindPVH:
		return "PVH ELF"
	}
	return "unknown"
}

// Config says what to load. Kernel and KernelSize are required.
type Config struct {
	Kernel     io.ReaderAt // the kernel file (bzImage or PVH ELF)
	KernelSize int64       // its size in bytes
	Initrd     io.ReaderAt // optional initrd/initramfs; nil for none
	InitrdSize int64       // its size in bytes (0 with a nil Initrd)
	Cmdline    string      // kernel command line, without the NUL
	CPUs       int         // vCPU count, 1..MaxCPUs
	// NoACPI leaves out the ACPI tables: the guest then finds its CPUs and
	// IOAPIC through the MP table alone and has no ACPI power-off.
	NoACPI bool
	Logger *slog.Logger // nil discards
}

// Load detects the kernel format, writes the kernel, initrd, command line,
// memory map, MP table, ACPI tables (unless cfg.NoACPI), boot parameters,
// GDT and, for bzImage, identity page tables into mem, and returns the state
// vCPU 0 must start in. mem must be laid out as RAMRanges(mem.Size()).
func Load(mem *guestmem.Memory, cfg Config) (*Entry, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lowEnd, err := checkConfig(mem, &cfg)
	if err != nil {
		return nil, err
	}
	kind, err := DetectKind(cfg.Kernel, cfg.KernelSize)
	if err != nil {
		return nil, err
	}

	var rsdp uint64
	if err := writeMPTable(mem, cfg.CPUs); err != nil {
		return nil, err
	}
	if !cfg.NoACPI {
		if err := writeACPI(mem, cfg.CPUs); err != nil {
			return nil, err
		}
		rsdp = ACPIAddr
	}
	if err := writeGDT(mem); err != nil {
		return nil, err
	}
	e820, err := E820(mem.Size())
	if err != nil {
		return nil, err
	}

	var p *placement
	var entry *Entry
	switch kind {
	case KindBzImage:
		p, err = loadBzImage(mem, &cfg, lowEnd, e820, rsdp)
		if err == nil {
			entry, err = entry64(mem)
		}
	case KindPVH:
		p, err = loadPVH(mem, &cfg, lowEnd, e820, rsdp)
		if err == nil {
			entry = entry32(p.entry)
		}
	}
	if err != nil {
		return nil, err
	}
	entry.Kind = kind
	log.LogAttrs(context.Background(), slog.LevelInfo, "boot: kernel loaded",
		slog.String("kind", kind.String()),
		slog.String("kernel", fmt.Sprintf("[%#x, %#x)", p.kernelStart, p.kernelEnd)),
		slog.String("initrd", fmt.Sprintf("%#x+%#x", p.initrdAddr, p.initrdSize)),
		slog.String("entry", fmt.Sprintf("%#x", entry.RIP)),
		slog.Int("cpus", cfg.CPUs),
		slog.Bool("acpi", !cfg.NoACPI))
	return entry, nil
}

// placement records where Load put things, for the log and the entry.
type placement struct {
	kernelStart, kernelEnd uint64 // guest range the kernel owns at boot
	initrdAddr, initrdSize uint64
	entry                  uint64 // PVH entry point
}

// Check reports, without guest memory, whether Load would accept cfg for
// ramSize bytes of guest RAM: the kernel's format and headers, the command
// line against the kernel's own limit (a bzImage's cmdline_size), and room
// for the kernel, its decompression space and the initrd. Only headers are
// read. Errors wrap the sentinels Load's would (ErrBadConfig, ErrNoRoom,
// ErrNotKernel, ...), so a VMM can reject a configuration before it
// creates anything.
func Check(cfg Config, ramSize uint64) error {
	lowEnd, err := checkSizes(&cfg, ramSize)
	if err != nil {
		return err
	}
	kind, err := DetectKind(cfg.Kernel, cfg.KernelSize)
	if err != nil {
		return err
	}
	switch kind {
	case KindBzImage:
		_, err = planBzImage(&cfg, lowEnd)
	case KindPVH:
		_, err = planPVH(&cfg, lowEnd)
	}
	return err
}

// checkConfig validates cfg against mem and returns the end of low RAM.
func checkConfig(mem *guestmem.Memory, cfg *Config) (uint64, error) {
	if mem == nil {
		return 0, fmt.Errorf("%w: no guest memory", ErrBadConfig)
	}
	size := mem.Size()
	lowEnd, err := checkSizes(cfg, size)
	if err != nil {
		return 0, err
	}
	for _, r := range RAMRanges(size) {
		if !mem.Contains(r.GPA, r.Size) {
			return 0, fmt.Errorf("%w: guest memory does not hold RAM range [%#x, %#x) of boot.RAMRanges(%#x)",
				ErrBadConfig, r.GPA, r.GPA+r.Size, size)
		}
	}
	return lowEnd, nil
}

// checkSizes validates cfg for size bytes of guest RAM and returns the end
// of low RAM.
func checkSizes(cfg *Config, size uint64) (uint64, error) {
	if cfg.Kernel == nil || cfg.KernelSize <= 0 {
		return 0, fmt.Errorf("%w: no kernel (size %d)", ErrBadConfig, cfg.KernelSize)
	}
	if cfg.CPUs < 1 || cfg.CPUs > MaxCPUs {
		return 0, fmt.Errorf("%w: %d vCPUs, want 1..%d", ErrBadConfig, cfg.CPUs, MaxCPUs)
	}
	if cfg.InitrdSize < 0 || (cfg.Initrd == nil) != (cfg.InitrdSize == 0) {
		return 0, fmt.Errorf("%w: initrd reader and size %d disagree", ErrBadConfig, cfg.InitrdSize)
	}
	if err := checkCmdline(cfg.Cmdline, CmdlineMax-1); err != nil {
		return 0, err
	}
	if size < MinRAM {
		return 0, fmt.Errorf("%w: %d MiB of guest RAM, need at least %d MiB", ErrBadConfig, size>>20, MinRAM>>20)
	}
	if uint64(cfg.KernelSize) > size {
		return 0, fmt.Errorf("%w: kernel is %d bytes, guest RAM %d", ErrNoRoom, cfg.KernelSize, size)
	}
	if uint64(cfg.InitrdSize) > size {
		return 0, fmt.Errorf("%w: initrd is %d bytes, guest RAM %d", ErrNoRoom, cfg.InitrdSize, size)
	}
	return RAMRanges(size)[0].Size, nil
}

// DetectKind reads the start of a kernel file and reports its format: a
// bzImage ("HdrS" setup header) or an ELF with a PVH entry note. A file that
// is neither gets ErrNotKernel; an ELF without the note gets ErrNoPVHEntry.
func DetectKind(r io.ReaderAt, size int64) (Kind, error) {
	if r == nil || size <= 0 {
		return KindUnknown, fmt.Errorf("%w: empty file", ErrNotKernel)
	}
	var head [hdrMagicOff + 4]byte
	n, err := r.ReadAt(head[:min(int64(len(head)), size)], 0)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == min(int64(len(head)), size)) {
		return KindUnknown, fmt.Errorf("boot: reading kernel header: %w", err)
	}
	if n >= 4 && string(head[:4]) == "\x7fELF" {
		if _, err := parsePVH(r, size); err != nil {
			return KindUnknown, err
		}
		return KindPVH, nil
	}
	if n == len(head) && string(head[hdrMagicOff:]) == hdrMagic {
		if _, err := parseSetupHeader(r, size); err != nil {
			return KindUnknown, err
		}
		return KindBzImage, nil
	}
	if n >= bootFlagOff+2 && head[bootFlagOff] == 0x55 && head[bootFlagOff+1] == 0xaa {
		return KindUnknown, fmt.Errorf("%w: boot sector without a Linux setup header (no %q at %#x)", ErrNotKernel, hdrMagic, hdrMagicOff)
	}
	return KindUnknown, fmt.Errorf("%w: no ELF magic and no %q at %#x", ErrNotKernel, hdrMagic, hdrMagicOff)
}

// readFull reads exactly len(p) bytes at off, treating a short read as a
// truncated file.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
