package boot

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"

	"github.com/corral-vmm/corral/guestmem"
)

// Setup header offsets (Documentation/arch/x86/boot.rst). They are the same
// in the bzImage file and in struct boot_params (the zero page).
const (
	setupSectsOff    = 0x1f1
	sysSizeOff       = 0x1f4
	bootFlagOff      = 0x1fe
	jumpOff          = 0x200 // 2-byte short jump; its second byte gives the header end
	hdrMagicOff      = 0x202
	versionOff       = 0x206
	typeOfLoaderOff  = 0x210
	loadFlagsOff     = 0x211
	ramdiskImageOff  = 0x218
	ramdiskSizeOff   = 0x21c
	heapEndPtrOff    = 0x224
	cmdLinePtrOff    = 0x228
	initrdAddrMaxOff = 0x22c
	kernelAlignOff   = 0x230
	relocatableOff   = 0x234
	xloadflagsOff    = 0x236
	cmdlineSizeOff   = 0x238
	prefAddressOff   = 0x258
	initSizeOff      = 0x260
	// setupHeaderMin is the end of the last field this loader reads
	// (init_size); setupHeaderMax is where boot_params' header area ends.
	setupHeaderMin = 0x264
	setupHeaderMax = 0x290

	hdrMagic     = "HdrS"
	bootFlag     = 0xaa55
	sectorSize   = 512
	defaultSects = 4 // setup_sects 0 means 4

	// minProtocol is 2.12: the first version with xloadflags, the only
	// place a bzImage says it has a 64-bit entry (XLF_KERNEL_64); it also
	// implies cmdline_size (2.06), pref_address and init_size (2.10).
	minProtocol = 0x020c
	// acpiRSDPProtocol is the first version with acpi_rsdp_addr.
	acpiRSDPProtocol = 0x020e

	loadedHigh  = 1 << 0 // LOADED_HIGH: protected-mode code loads at 1 MiB
	canUseHeap  = 1 << 7 // CAN_USE_HEAP: heap_end_ptr is valid
	xlfKernel64 = 1 << 0 // XLF_KERNEL_64: 64-bit entry at load address + 0x200

	startup64Offset = 0x200
	heapEnd         = 0xfe00 // heap_end_ptr: end of the setup heap (boot.rst's value)
	loaderUndefined = 0xff   // type_of_loader: no assigned boot loader ID

	// defaultInitrdMax is initrd_addr_max for kernels that leave it 0.
	defaultInitrdMax = 0x37ffffff
)

// setupHeader is the validated subset of a bzImage setup header.
type setupHeader struct {
	raw         []byte // file bytes [0, header end): copied to the zero page
	version     uint16
	setupSize   uint64 // bytes of real-mode setup before the kernel proper
	kernelSize  uint64 // bytes of protected-mode kernel (syssize * 16)
	initrdMax   uint64 // highest address of the initrd's last byte
	cmdlineSize uint64 // longest command line without its NUL
	relocatable bool
	kernelAlign uint64
	prefAddress uint64
	initSize    uint64
}

// parseSetupHeader reads and validates a bzImage's setup header. Errors
// name the field at fault and wrap ErrBadKernel.
func parseSetupHeader(r io.ReaderAt, size int64) (*setupHeader, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: bzImage: "+format, append([]any{ErrBadKernel}, args...)...)
	}
	if size < setupHeaderMin {
		return nil, bad("file is %d bytes, shorter than the setup header (%#x)", size, setupHeaderMin)
	}
	buf := make([]byte, min(size, setupHeaderMax))
	if err := readFull(r, buf, 0); err != nil {
		return nil, fmt.Errorf("boot: bzImage: reading setup header: %w", err)
	}
	le := binary.LittleEndian
	if f := le.Uint16(buf[bootFlagOff:]); f != bootFlag {
		return nil, bad("boot_flag at %#x is %#04x, want %#04x", bootFlagOff, f, bootFlag)
	}
	if m := string(buf[hdrMagicOff : hdrMagicOff+4]); m != hdrMagic {
		return nil, bad("header magic at %#x is %q, want %q", hdrMagicOff, m, hdrMagic)
	}
	h := &setupHeader{version: le.Uint16(buf[versionOff:])}
	if h.version < minProtocol {
		return nil, bad("boot protocol version %d.%02d is older than %d.%02d (xloadflags/XLF_KERNEL_64 needed for the 64-bit entry)",
			h.version>>8, h.version&0xff, minProtocol>>8, minProtocol&0xff)
	}
	end := uint64(hdrMagicOff) + uint64(buf[jumpOff+1])
	if end < setupHeaderMin {
		return nil, bad("setup header ends at %#x (jump byte at %#x), before init_size at %#x", end, jumpOff+1, initSizeOff)
	}
	end = min(end, setupHeaderMax, uint64(len(buf)))
	h.raw = buf[:end]

	if lf := buf[loadFlagsOff]; lf&loadedHigh == 0 {
		return nil, bad("loadflags %#02x lack LOADED_HIGH: not a bzImage (zImage loads low)", lf)
	}
	if xlf := le.Uint16(buf[xloadflagsOff:]); xlf&xlfKernel64 == 0 {
		return nil, bad("xloadflags %#04x lack XLF_KERNEL_64: no 64-bit entry point", xlf)
	}
	sects := uint64(buf[setupSectsOff])
	if sects == 0 {
		sects = defaultSects
	}
	h.setupSize = (sects + 1) * sectorSize
	if h.setupSize > uint64(size) {
		return nil, bad("setup_sects %d (%d bytes of setup) is past the end of the %d-byte file", sects, h.setupSize, size)
	}
	sys := uint64(le.Uint32(buf[sysSizeOff:]))
	h.kernelSize = sys * 16
	if sys == 0 {
		return nil, bad("syssize is 0: no protected-mode kernel")
	}
	if h.kernelSize > uint64(size)-h.setupSize {
		return nil, bad("syssize %#x (%d bytes) runs past the end of the file (%d bytes after %d of setup)",
			sys, h.kernelSize, uint64(size)-h.setupSize, h.setupSize)
	}
	h.initrdMax = uint64(le.Uint32(buf[initrdAddrMaxOff:]))
	if h.initrdMax == 0 {
		h.initrdMax = defaultInitrdMax
	}
	h.cmdlineSize = uint64(le.Uint32(buf[cmdlineSizeOff:]))
	h.relocatable = buf[relocatableOff] != 0
	h.kernelAlign = uint64(le.Uint32(buf[kernelAlignOff:]))
	if h.relocatable && (h.kernelAlign == 0 || bits.OnesCount64(h.kernelAlign) != 1) {
		return nil, bad("kernel_alignment %#x of a relocatable kernel is not a power of two", h.kernelAlign)
	}
	h.prefAddress = le.Uint64(buf[prefAddressOff:])
	if !h.relocatable && h.prefAddress < KernelAddr {
		return nil, bad("pref_address %#x of a non-relocatable kernel is below 1 MiB", h.prefAddress)
	}
	h.initSize = uint64(le.Uint32(buf[initSizeOff:]))
	if h.initSize == 0 {
		return nil, bad("init_size is 0")
	}
	return h, nil
}

// runtimeStart is where the kernel decompresses and runs when loaded at
// KernelAddr: a relocatable kernel moves to KernelAddr rounded up to
// kernel_alignment but not below pref_address (LOAD_PHYSICAL_ADDR), as
// arch/x86/boot/compressed/head_64.S computes; a fixed one runs at
// pref_address.
func (h *setupHeader) runtimeStart() (uint64, bool) {
	if !h.relocatable {
		return h.prefAddress, true
	}
	a, ok := alignUp(KernelAddr, h.kernelAlign)
	return max(a, h.prefAddress), ok
}

// bzPlan is where a bzImage and its initrd go in guest RAM.
type bzPlan struct {
	h          *setupHeader
	kernelEnd  uint64 // page-aligned end of everything the kernel owns at boot
	initrdAddr uint64 // 0 without an initrd
}

// planBzImage validates the bzImage against cfg and low RAM ending at
// lowEnd, without touching guest memory: the kernel and its decompression
// space fit, the command line fits the kernel's cmdline_size, the initrd
// fits between the kernel and initrd_addr_max.
func planBzImage(cfg *Config, lowEnd uint64) (*bzPlan, error) {
	h, err := parseSetupHeader(cfg.Kernel, cfg.KernelSize)
	if err != nil {
		return nil, err
	}
	// The kernel proper at 1 MiB, and the space it decompresses into.
	loadEnd := KernelAddr + h.kernelSize
	if loadEnd > lowEnd || loadEnd < KernelAddr {
		return nil, fmt.Errorf("%w: bzImage kernel of %d bytes at %#x runs past low RAM end %#x", ErrNoRoom, h.kernelSize, KernelAddr, lowEnd)
	}
	start, ok := h.runtimeStart()
	runEnd, carry := bits.Add64(start, h.initSize, 0)
	if !ok || carry != 0 || runEnd > lowEnd {
		return nil, fmt.Errorf("%w: bzImage needs init_size %#x bytes from %#x (kernel_alignment %#x, pref_address %#x), past low RAM end %#x",
			ErrNoRoom, h.initSize, start, h.kernelAlign, h.prefAddress, lowEnd)
	}
	if h.cmdlineSize < uint64(len(cfg.Cmdline)) {
		return nil, fmt.Errorf("%w: command line is %d bytes, more than the %d this bzImage accepts (its cmdline_size)",
			ErrBadConfig, len(cfg.Cmdline), h.cmdlineSize)
	}
	kernelEnd, _ := alignUp(max(loadEnd, runEnd), pageSize) // runEnd <= lowEnd: no overflow
	initrdAddr, err := planInitrd(cfg, kernelEnd, min(lowEnd, h.initrdMax+1))
	if err != nil {
		return nil, err
	}
	return &bzPlan{h: h, kernelEnd: kernelEnd, initrdAddr: initrdAddr}, nil
}

// loadBzImage validates the bzImage, copies its protected-mode kernel to
// KernelAddr, writes the command line, places the initrd and fills the zero
// page.
func loadBzImage(mem *guestmem.Memory, cfg *Config, lowEnd uint64, e820 []E820Entry, rsdp uint64) (*placement, error) {
	p, err := planBzImage(cfg, lowEnd)
	if err != nil {
		return nil, err
	}
	h := p.h
	if err := readInto(mem, cfg.Kernel, int64(h.setupSize), KernelAddr, h.kernelSize); err != nil {
		return nil, fmt.Errorf("boot: bzImage: loading %d-byte kernel at %#x: %w", h.kernelSize, KernelAddr, err)
	}
	if err := writeCmdline(mem, cfg.Cmdline); err != nil {
		return nil, err
	}
	initrdAddr, initrdSize, err := loadInitrd(mem, cfg, p.initrdAddr)
	if err != nil {
		return nil, err
	}
	zp := zeroPage{hdr: h, initrdAddr: initrdAddr, initrdSize: initrdSize, e820: e820, rsdp: rsdp}
	if err := zp.write(mem); err != nil {
		return nil, err
	}
	return &placement{kernelStart: KernelAddr, kernelEnd: p.kernelEnd, initrdAddr: initrdAddr, initrdSize: initrdSize}, nil
}
