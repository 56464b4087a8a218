package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

// newMem returns size bytes of guest RAM at GPA 0.
func newMem(t testing.TB, size uint64) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.New(guestmem.Region{GPA: 0, Data: make([]byte, size)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// bzOpts are the setup header fields of a synthetic bzImage. The defaults
// (bzDefaults) are those of Debian's 6.1 kernel, with a smaller init_size.
type bzOpts struct {
	setupSects  byte
	payload     int // protected-mode kernel bytes (a multiple of 16)
	trailer     int // bytes after the kernel (e.g. a signature)
	version     uint16
	jump        byte
	loadflags   byte
	initrdMax   uint32
	align       uint32
	relocatable byte
	xloadflags  uint16
	cmdlineSize uint32
	prefAddress uint64
	initSize    uint32
}

func bzDefaults() bzOpts {
	return bzOpts{
		setupSects:  4,
		payload:     64 << 10,
		version:     0x020f,
		jump:        0x6a,
		loadflags:   loadedHigh,
		initrdMax:   0x7fffffff,
		align:       0x200000,
		relocatable: 1,
		xloadflags:  0x7f,
		cmdlineSize: 0x7ff,
		prefAddress: 0x1000000,
		initSize:    0x1000000,
	}
}

// makeBzImage builds a bzImage: setup sectors with the header, then a
// payload whose byte i is byte(i*7+3), then the trailer.
func makeBzImage(o bzOpts) []byte {
	sects := int(o.setupSects)
	if sects == 0 {
		sects = 4
	}
	setup := (sects + 1) * 512
	b := make([]byte, setup+o.payload+o.trailer)
	le := binary.LittleEndian
	b[setupSectsOff] = o.setupSects
	le.PutUint32(b[sysSizeOff:], uint32(o.payload/16))
	le.PutUint16(b[0x1fa:], 0xffff) // vid_mode: normal
	le.PutUint16(b[bootFlagOff:], bootFlag)
	b[jumpOff], b[jumpOff+1] = 0xeb, o.jump
	copy(b[hdrMagicOff:], hdrMagic)
	le.PutUint16(b[versionOff:], o.version)
	b[loadFlagsOff] = o.loadflags
	le.PutUint32(b[0x214:], 0x100000) // code32_start
	le.PutUint32(b[initrdAddrMaxOff:], o.initrdMax)
	le.PutUint32(b[kernelAlignOff:], o.align)
	b[relocatableOff] = o.relocatable
	b[0x235] = 21 // min_alignment
	le.PutUint16(b[xloadflagsOff:], o.xloadflags)
	le.PutUint32(b[cmdlineSizeOff:], o.cmdlineSize)
	le.PutUint64(b[prefAddressOff:], o.prefAddress)
	le.PutUint32(b[initSizeOff:], o.initSize)
	le.PutUint32(b[0x264:], 0x7c8d20) // handover_offset
	for i := range o.payload {
		b[setup+i] = byte(i*7 + 3)
	}
	for i := range o.trailer {
		b[setup+o.payload+i] = 0xee
	}
	return b
}

// elfSeg is one PT_LOAD segment of a synthetic ELF.
type elfSeg struct {
	paddr uint64
	data  []byte
	memsz uint64 // 0: len(data)
	vaddr uint64 // 0: paddr
}

// elfOpts describe a synthetic PVH ELF.
type elfOpts struct {
	class     elf.Class // ELFCLASS64 (default) or ELFCLASS32
	machine   elf.Machine
	typ       elf.Type
	segs      []elfSeg
	notes     []byte // raw note bytes; nil: one Xen PHYS32_ENTRY note
	entry     uint64 // PVH entry in the default note
	descSize  int    // 4 or 8 (default 8 for ELF64, 4 for ELF32)
	noteInSec bool   // put the notes in an SHT_NOTE section, not a PT_NOTE
}

// xenNote encodes one ELF note (4-byte padding).
func xenNote(name string, typ uint32, desc []byte) []byte {
	var b []byte
	le := binary.LittleEndian
	b = le.AppendUint32(b, uint32(len(name)+1))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// entryNote returns a Xen PHYS32_ENTRY note with a size-byte descriptor.
func entryNote(entry uint64, size int) []byte {
	d := make([]byte, 8)
	binary.LittleEndian.PutUint64(d, entry)
	return xenNote("Xen", xenElfnotePhys32Entry, d[:size])
}

// makeELF builds an ELF executable with the given PT_LOAD segments and a
// PVH note (in a PT_NOTE segment or an SHT_NOTE section).
func makeELF(o elfOpts) []byte {
	if o.class == 0 {
		o.class = elf.ELFCLASS64
	}
	is64 := o.class == elf.ELFCLASS64
	if o.machine == 0 {
		o.machine = elf.EM_X86_64
		if !is64 {
			o.machine = elf.EM_386
		}
	}
	if o.typ == 0 {
		o.typ = elf.ET_EXEC
	}
	if o.descSize == 0 {
		o.descSize = 4
		if is64 {
			o.descSize = 8
		}
	}
	notes := o.notes
	if notes == nil {
		notes = entryNote(o.entry, o.descSize)
	}
	ehsize, phsize, shsize := 64, 56, 64
	if !is64 {
		ehsize, phsize, shsize = 52, 32, 40
	}
	nph := len(o.segs)
	if !o.noteInSec {
		nph++
	}
	// Layout: header, program headers, segment data, notes, shstrtab,
	// section headers (only with noteInSec).
	off := ehsize + nph*phsize
	type placed struct {
		off int
		seg elfSeg
	}
	var body bytes.Buffer
	var loads []placed
	for _, s := range o.segs {
		for (off+body.Len())%16 != 0 {
			body.WriteByte(0)
		}
		loads = append(loads, placed{off + body.Len(), s})
		body.Write(s.data)
	}
	for (off+body.Len())%4 != 0 {
		body.WriteByte(0)
	}
	noteOff := off + body.Len()
	body.Write(notes)
	shstr := []byte("\x00.note.Xen\x00.shstrtab\x00")
	shstrOff := off + body.Len()
	var shoff int
	if o.noteInSec {
		body.Write(shstr)
		for (off+body.Len())%8 != 0 {
			body.WriteByte(0)
		}
		shoff = off + body.Len()
	}

	var out bytes.Buffer
	le := binary.LittleEndian
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(o.class), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	nsh := 0
	if o.noteInSec {
		nsh = 3
	}
	if is64 {
		binary.Write(&out, le, elf.Header64{
			Ident: ident, Type: uint16(o.typ), Machine: uint16(o.machine), Version: uint32(elf.EV_CURRENT),
			Entry: 0, Phoff: uint64(ehsize), Shoff: uint64(shoff), Ehsize: uint16(ehsize),
			Phentsize: uint16(phsize), Phnum: uint16(nph), Shentsize: uint16(shsize), Shnum: uint16(nsh), Shstrndx: uint16(max(nsh-1, 0)),
		})
		for _, l := range loads {
			memsz := l.seg.memsz
			if memsz == 0 {
				memsz = uint64(len(l.seg.data))
			}
			vaddr := l.seg.vaddr
			if vaddr == 0 {
				vaddr = l.seg.paddr
			}
			binary.Write(&out, le, elf.Prog64{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: uint64(l.off),
				Vaddr: vaddr, Paddr: l.seg.paddr, Filesz: uint64(len(l.seg.data)), Memsz: memsz, Align: 16})
		}
		if !o.noteInSec {
			binary.Write(&out, le, elf.Prog64{Type: uint32(elf.PT_NOTE), Off: uint64(noteOff), Filesz: uint64(len(notes)), Memsz: uint64(len(notes)), Align: 4})
		}
	} else {
		binary.Write(&out, le, elf.Header32{
			Ident: ident, Type: uint16(o.typ), Machine: uint16(o.machine), Version: uint32(elf.EV_CURRENT),
			Phoff: uint32(ehsize), Shoff: uint32(shoff), Ehsize: uint16(ehsize),
			Phentsize: uint16(phsize), Phnum: uint16(nph), Shentsize: uint16(shsize), Shnum: uint16(nsh), Shstrndx: uint16(max(nsh-1, 0)),
		})
		for _, l := range loads {
			memsz := l.seg.memsz
			if memsz == 0 {
				memsz = uint64(len(l.seg.data))
			}
			binary.Write(&out, le, elf.Prog32{Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Off: uint32(l.off),
				Vaddr: uint32(l.seg.paddr), Paddr: uint32(l.seg.paddr), Filesz: uint32(len(l.seg.data)), Memsz: uint32(memsz), Align: 16})
		}
		if !o.noteInSec {
			binary.Write(&out, le, elf.Prog32{Type: uint32(elf.PT_NOTE), Off: uint32(noteOff), Filesz: uint32(len(notes)), Memsz: uint32(len(notes)), Align: 4})
		}
	}
	out.Write(body.Bytes())
	if o.noteInSec {
		// Sections: null, .note.Xen, .shstrtab.
		if is64 {
			binary.Write(&out, le, elf.Section64{})
			binary.Write(&out, le, elf.Section64{Name: 1, Type: uint32(elf.SHT_NOTE), Off: uint64(noteOff), Size: uint64(len(notes)), Addralign: 4})
			binary.Write(&out, le, elf.Section64{Name: 11, Type: uint32(elf.SHT_STRTAB), Off: uint64(shstrOff), Size: uint64(len(shstr)), Addralign: 1})
		} else {
			binary.Write(&out, le, elf.Section32{})
			binary.Write(&out, le, elf.Section32{Name: 1, Type: uint32(elf.SHT_NOTE), Off: uint32(noteOff), Size: uint32(len(notes)), Addralign: 4})
			binary.Write(&out, le, elf.Section32{Name: 11, Type: uint32(elf.SHT_STRTAB), Off: uint32(shstrOff), Size: uint32(len(shstr)), Addralign: 1})
		}
	}
	return out.Bytes()
}

// pvhDefaults is a small PVH kernel: 8 KiB of code at 16 MiB (plus 4 KiB of
// bss) and a 4 KiB data segment at 17 MiB, entry 16 MiB + 0x40.
func pvhDefaults() elfOpts {
	code := make([]byte, 8192)
	for i := range code {
		code[i] = byte(i*5 + 1)
	}
	data := bytes.Repeat([]byte{0xd7}, 4096)
	return elfOpts{
		segs: []elfSeg{
			{paddr: 0x1000000, data: code, memsz: 8192 + 4096, vaddr: 0xffffffff81000000},
			{paddr: 0x1100000, data: data},
		},
		entry: 0x1000040,
	}
}

// loadBytes runs Load on an in-memory kernel.
func loadBytes(mem *guestmem.Memory, kernel []byte, initrd []byte, cmdline string, cpus int) (*Entry, error) {
	cfg := Config{Kernel: bytes.NewReader(kernel), KernelSize: int64(len(kernel)), Cmdline: cmdline, CPUs: cpus}
	if initrd != nil {
		cfg.Initrd, cfg.InitrdSize = bytes.NewReader(initrd), int64(len(initrd))
	}
	return Load(mem, cfg)
}

// mustRead reads n bytes of guest memory at gpa.
func mustRead(t testing.TB, mem *guestmem.Memory, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := mem.ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return b
}
