package boot

import (
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"math/bits"
	"sort"

	"github.com/corral-vmm/corral/guestmem"
)

const (
	// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the note (name
	// "Xen") giving the 32-bit physical PVH entry point.
	xenElfnotePhys32Entry = 18

	maxELFProgs    = 64      // program headers accepted (vmlinux has about 5)
	maxNoteSize    = 1 << 20 // bytes of one note segment or section scanned
	maxNoteSources = 64      // note segments plus note sections scanned
)

// pvhImage is a validated PVH ELF kernel.
type pvhImage struct {
	loads []elf.ProgHeader // PT_LOAD segments with memsz > 0, by address
	entry uint64
}

// parsePVH parses an ELF kernel, checks its loadable segments and finds the
// PVH entry note. Errors wrap ErrBadKernel or ErrNoPVHEntry.
func parsePVH(r io.ReaderAt, size int64) (*pvhImage, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: ELF: "+format, append([]any{ErrBadKernel}, args...)...)
	}
	f, err := elf.NewFile(io.NewSectionReader(r, 0, size))
	if err != nil {
		return nil, bad("%v", err)
	}
	if f.Machine != elf.EM_X86_64 && f.Machine != elf.EM_386 {
		return nil, bad("machine %v, want EM_X86_64 or EM_386", f.Machine)
	}
	if f.Type != elf.ET_EXEC {
		return nil, bad("type %v, want ET_EXEC", f.Type)
	}
	if len(f.Progs) > maxELFProgs {
		return nil, bad("%d program headers, at most %d accepted", len(f.Progs), maxELFProgs)
	}
	img := &pvhImage{}
	for i, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, bad("segment %d: p_filesz %#x exceeds p_memsz %#x", i, p.Filesz, p.Memsz)
		}
		if end, carry := bits.Add64(p.Off, p.Filesz, 0); carry != 0 || end > uint64(size) {
			return nil, bad("segment %d: file range p_offset %#x + p_filesz %#x is past the end of the %d-byte file", i, p.Off, p.Filesz, size)
		}
		if _, carry := bits.Add64(p.Paddr, p.Memsz, 0); carry != 0 {
			return nil, bad("segment %d: p_paddr %#x + p_memsz %#x overflows", i, p.Paddr, p.Memsz)
		}
		img.loads = append(img.loads, p.ProgHeader)
	}
	if len(img.loads) == 0 {
		return nil, bad("no PT_LOAD segment")
	}
	sort.Slice(img.loads, func(i, j int) bool { return img.loads[i].Paddr < img.loads[j].Paddr })
	for i := 1; i < len(img.loads); i++ {
		a, b := img.loads[i-1], img.loads[i]
		if a.Paddr+a.Memsz > b.Paddr {
			return nil, bad("PT_LOAD segments at p_paddr %#x (+%#x) and %#x overlap", a.Paddr, a.Memsz, b.Paddr)
		}
	}
	entry, err := findPVHEntry(f, r, size)
	if err != nil {
		return nil, err
	}
	inside := false
	for _, p := range img.loads {
		if entry >= p.Paddr && entry-p.Paddr < p.Filesz {
			inside = true
		}
	}
	if !inside {
		return nil, bad("PVH entry %#x is not inside a loaded segment", entry)
	}
	img.entry = entry
	return img, nil
}

// findPVHEntry scans the PT_NOTE segments, then the SHT_NOTE sections, for
// XEN_ELFNOTE_PHYS32_ENTRY.
func findPVHEntry(f *elf.File, r io.ReaderAt, size int64) (uint64, error) {
	type source struct {
		what   string
		off, n uint64
		align  uint64
	}
	var srcs []source
	for i, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			srcs = append(srcs, source{fmt.Sprintf("PT_NOTE segment %d", i), p.Off, p.Filesz, p.Align})
		}
	}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOTE {
			srcs = append(srcs, source{"note section " + s.Name, s.Offset, s.FileSize, s.Addralign})
		}
	}
	if len(srcs) > maxNoteSources {
		srcs = srcs[:maxNoteSources]
	}
	for _, s := range srcs {
		if s.n > maxNoteSize {
			return 0, fmt.Errorf("%w: ELF: %s is %d bytes, at most %d scanned", ErrBadKernel, s.what, s.n, maxNoteSize)
		}
		if end, carry := bits.Add64(s.off, s.n, 0); carry != 0 || end > uint64(size) {
			return 0, fmt.Errorf("%w: ELF: %s at offset %#x (+%#x) is past the end of the %d-byte file", ErrBadKernel, s.what, s.off, s.n, size)
		}
		buf := make([]byte, s.n)
		if err := readFull(r, buf, int64(s.off)); err != nil {
			return 0, fmt.Errorf("boot: ELF: reading %s: %w", s.what, err)
		}
		align := uint64(4)
		if s.align == 8 {
			align = 8
		}
		entry, found, err := pvhEntryNote(buf, align, f.ByteOrder)
		if err != nil {
			return 0, fmt.Errorf("%w: ELF: %s: %v", ErrBadKernel, s.what, err)
		}
		if found {
			return entry, nil
		}
	}
	return 0, fmt.Errorf("%w: no XEN_ELFNOTE_PHYS32_ENTRY (Xen note type %d) in %d note segments/sections; build the kernel with CONFIG_PVH",
		ErrNoPVHEntry, xenElfnotePhys32Entry, len(srcs))
}

// pvhEntryNote walks ELF notes padded to align bytes and returns the
// descriptor of the Xen PHYS32_ENTRY note: a 4- or 8-byte address below 4 GiB.
func pvhEntryNote(b []byte, align uint64, bo binary.ByteOrder) (uint64, bool, error) {
	for off := uint64(0); off < uint64(len(b)); {
		rest := b[off:]
		if len(rest) < 12 {
			return 0, false, fmt.Errorf("note at %#x: %d bytes left, header needs 12", off, len(rest))
		}
		namesz, descsz, typ := uint64(bo.Uint32(rest)), uint64(bo.Uint32(rest[4:])), bo.Uint32(rest[8:])
		nameEnd := 12 + namesz
		descOff, _ := alignUp(nameEnd, align) // namesz < 2^32: no overflow
		descEnd := descOff + descsz
		next, _ := alignUp(descEnd, align)
		if descEnd > uint64(len(rest)) {
			return 0, false, fmt.Errorf("note at %#x: namesz %d + descsz %d run past the end (%d bytes)", off, namesz, descsz, len(rest))
		}
		name := rest[12:nameEnd]
		if typ == xenElfnotePhys32Entry && (string(name) == "Xen\x00" || string(name) == "Xen") {
			desc := rest[descOff:descEnd]
			var v uint64
			switch len(desc) {
			case 4:
				v = uint64(bo.Uint32(desc))
			case 8:
				v = bo.Uint64(desc)
			default:
				return 0, false, fmt.Errorf("XEN_ELFNOTE_PHYS32_ENTRY descsz is %d, want 4 or 8", len(desc))
			}
			if v >= 1<<32 {
				return 0, false, fmt.Errorf("XEN_ELFNOTE_PHYS32_ENTRY %#x is not a 32-bit address", v)
			}
			return v, true, nil
		}
		off += next
	}
	return 0, false, nil
}

// PVH start info layout inside the page at PVHInfoAddr
// (xen/include/public/arch-x86/hvm/start_info.h).
const (
	pvhMagic   = 0x336ec578
	pvhVersion = 1

	pvhModlistAddr  = PVHInfoAddr + 0x40 // one hvm_modlist_entry (32 bytes)
	pvhMemmapAddr   = PVHInfoAddr + 0x80 // hvm_memmap_table_entry array
	pvhInfoSize     = 0x38               // struct hvm_start_info
	pvhModEntrySize = 32
	pvhMemEntrySize = 24
	pvhPageSize     = 0x1000

	siMagicOff         = 0x00
	siVersionOff       = 0x04
	siNrModulesOff     = 0x0c
	siModlistPaddrOff  = 0x10
	siCmdlinePaddrOff  = 0x18
	siRSDPPaddrOff     = 0x20
	siMemmapPaddrOff   = 0x28
	siMemmapEntriesOff = 0x30
)

// pvhPlan is where a PVH kernel and its initrd go in guest RAM.
type pvhPlan struct {
	img        *pvhImage
	kernelEnd  uint64 // page-aligned end of the last segment
	initrdAddr uint64 // 0 without an initrd
}

// planPVH validates a PVH ELF kernel against cfg and low RAM ending at
// lowEnd, without touching guest memory: every segment lies in low RAM
// above the fixed areas and the initrd fits above the kernel.
func planPVH(cfg *Config, lowEnd uint64) (*pvhPlan, error) {
	img, err := parsePVH(cfg.Kernel, cfg.KernelSize)
	if err != nil {
		return nil, err
	}
	for _, p := range img.loads {
		if p.Paddr < KernelAddr || p.Paddr+p.Memsz > lowEnd {
			return nil, fmt.Errorf("%w: ELF segment at p_paddr [%#x, %#x) is outside low RAM [%#x, %#x) above the fixed low areas",
				ErrNoRoom, p.Paddr, p.Paddr+p.Memsz, uint64(KernelAddr), lowEnd)
		}
	}
	last := img.loads[len(img.loads)-1]
	kernelEnd, _ := alignUp(last.Paddr+last.Memsz, pageSize) // <= lowEnd
	initrdAddr, err := planInitrd(cfg, kernelEnd, lowEnd)
	if err != nil {
		return nil, err
	}
	return &pvhPlan{img: img, kernelEnd: kernelEnd, initrdAddr: initrdAddr}, nil
}

// loadPVH loads a PVH ELF kernel's segments at their physical addresses,
// writes the command line, places the initrd as the one module and writes
// the hvm_start_info with its memory map.
func loadPVH(mem *guestmem.Memory, cfg *Config, lowEnd uint64, e820 []E820Entry, rsdp uint64) (*placement, error) {
	plan, err := planPVH(cfg, lowEnd)
	if err != nil {
		return nil, err
	}
	img := plan.img
	for _, p := range img.loads {
		if err := readInto(mem, cfg.Kernel, int64(p.Off), p.Paddr, p.Filesz); err != nil {
			return nil, fmt.Errorf("boot: ELF: loading segment at %#x: %w", p.Paddr, err)
		}
		if err := mem.Zero(p.Paddr+p.Filesz, p.Memsz-p.Filesz); err != nil {
			return nil, fmt.Errorf("boot: ELF: zeroing segment bss at %#x: %w", p.Paddr+p.Filesz, err)
		}
	}
	if err := writeCmdline(mem, cfg.Cmdline); err != nil {
		return nil, err
	}
	initrdAddr, initrdSize, err := loadInitrd(mem, cfg, plan.initrdAddr)
	if err != nil {
		return nil, err
	}
	si, err := encodeStartInfo(initrdAddr, initrdSize, e820, rsdp)
	if err != nil {
		return nil, err
	}
	if err := mem.WriteAt(si, PVHInfoAddr); err != nil {
		return nil, fmt.Errorf("boot: writing PVH start info: %w", err)
	}
	return &placement{kernelStart: img.loads[0].Paddr, kernelEnd: plan.kernelEnd, initrdAddr: initrdAddr, initrdSize: initrdSize, entry: img.entry}, nil
}

// encodeStartInfo returns the page at PVHInfoAddr: struct hvm_start_info,
// the module list (the initrd, if any) and the memory map.
func encodeStartInfo(initrdAddr, initrdSize uint64, e820 []E820Entry, rsdp uint64) ([]byte, error) {
	if uint64(len(e820)) > (pvhPageSize-(pvhMemmapAddr-PVHInfoAddr))/pvhMemEntrySize {
		return nil, fmt.Errorf("boot: %d memory map entries do not fit the PVH start info page", len(e820))
	}
	b := make([]byte, pvhPageSize)
	le := binary.LittleEndian
	le.PutUint32(b[siMagicOff:], pvhMagic)
	le.PutUint32(b[siVersionOff:], pvhVersion)
	le.PutUint64(b[siCmdlinePaddrOff:], CmdlineAddr)
	le.PutUint64(b[siRSDPPaddrOff:], rsdp)
	if initrdSize > 0 {
		le.PutUint32(b[siNrModulesOff:], 1)
		le.PutUint64(b[siModlistPaddrOff:], pvhModlistAddr)
		m := b[pvhModlistAddr-PVHInfoAddr:]
		le.PutUint64(m[0:], initrdAddr)
		le.PutUint64(m[8:], initrdSize)
	}
	le.PutUint64(b[siMemmapPaddrOff:], pvhMemmapAddr)
	le.PutUint32(b[siMemmapEntriesOff:], uint32(len(e820)))
	for i, e := range e820 {
		o := b[pvhMemmapAddr-PVHInfoAddr+uint64(i)*pvhMemEntrySize:]
		le.PutUint64(o[0:], e.Addr)
		le.PutUint64(o[8:], e.Size)
		le.PutUint32(o[16:], uint32(e.Type))
	}
	return b, nil
}
