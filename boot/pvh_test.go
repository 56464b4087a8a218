package boot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// startInfo is struct hvm_start_info read back from guest memory.
type startInfo struct {
	Magic, Version, Flags, NrModules uint32
	ModlistPaddr, CmdlinePaddr       uint64
	RSDPPaddr, MemmapPaddr           uint64
	MemmapEntries, Reserved          uint32
}

func readStartInfo(t *testing.T, b []byte) startInfo {
	t.Helper()
	var si startInfo
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &si); err != nil {
		t.Fatal(err)
	}
	return si
}

func TestPVHLoad(t *testing.T) {
	for _, class := range []elf.Class{elf.ELFCLASS64, elf.ELFCLASS32} {
		t.Run(class.String(), func(t *testing.T) {
			o := pvhDefaults()
			o.class = class
			img := makeELF(o)
			mem := newMem(t, 64<<20)
			// Dirty the bss so the test sees the loader zero it.
			if err := mem.WriteAt(bytes.Repeat([]byte{0xaa}, 4096), 0x1000000+8192); err != nil {
				t.Fatal(err)
			}
			initrd := bytes.Repeat([]byte{0x42}, 12345)
			e, err := loadBytes(mem, img, initrd, "console=ttyS0", 3)
			if err != nil {
				t.Fatal(err)
			}
			if e.Kind != KindPVH || e.Mode != Mode32 || e.RIP != 0x1000040 || e.RBX != PVHInfoAddr {
				t.Fatalf("entry %+v", e)
			}
			if e.CR0 != CR0PE|CR0ET || e.CR3 != 0 || e.CR4 != 0 || e.EFER != 0 || e.RFLAGS != 2 {
				t.Errorf("CR0 %#x CR3 %#x CR4 %#x EFER %#x RFLAGS %#x", e.CR0, e.CR3, e.CR4, e.EFER, e.RFLAGS)
			}
			if e.CS.Selector != SelectorCode32 || !e.CS.DB || e.CS.L || e.CS.Limit != 0xffffffff || e.DS.Selector != SelectorData {
				t.Errorf("CS %+v DS %+v", e.CS, e.DS)
			}
			if !bytes.Equal(mustRead(t, mem, 0x1000000, 8192), o.segs[0].data) || !bytes.Equal(mustRead(t, mem, 0x1100000, 4096), o.segs[1].data) {
				t.Error("segments not loaded at p_paddr")
			}
			if !bytes.Equal(mustRead(t, mem, 0x1000000+8192, 4096), make([]byte, 4096)) {
				t.Error("bss (p_memsz beyond p_filesz) not zeroed")
			}
			si := readStartInfo(t, mustRead(t, mem, PVHInfoAddr, pvhInfoSize))
			want := startInfo{Magic: 0x336ec578, Version: 1, NrModules: 1, ModlistPaddr: pvhModlistAddr,
				CmdlinePaddr: CmdlineAddr, RSDPPaddr: ACPIAddr, MemmapPaddr: pvhMemmapAddr, MemmapEntries: 3}
			if si != want {
				t.Fatalf("start info %+v, want %+v", si, want)
			}
			mod := mustRead(t, mem, si.ModlistPaddr, 32)
			addr, size := binary.LittleEndian.Uint64(mod), binary.LittleEndian.Uint64(mod[8:])
			if size != uint64(len(initrd)) || addr != (64<<20-uint64(len(initrd)))&^0xfff {
				t.Errorf("module %#x+%d", addr, size)
			}
			if !bytes.Equal(mustRead(t, mem, addr, size), initrd) {
				t.Error("initrd in memory differs")
			}
			e820, _ := E820(64 << 20)
			for i, w := range e820 {
				b := mustRead(t, mem, si.MemmapPaddr+uint64(i)*24, 24)
				got := E820Entry{binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:]), E820Type(binary.LittleEndian.Uint32(b[16:]))}
				if got != w || binary.LittleEndian.Uint32(b[20:]) != 0 {
					t.Errorf("memmap[%d] = %+v, want %+v", i, got, w)
				}
			}
			if got := mustRead(t, mem, CmdlineAddr, 14); string(got) != "console=ttyS0\x00" {
				t.Errorf("cmdline %q", got)
			}
		})
	}
}

func TestPVHNoInitrdNoACPI(t *testing.T) {
	img := makeELF(pvhDefaults())
	mem := newMem(t, 64<<20)
	if _, err := Load(mem, Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), CPUs: 1, NoACPI: true}); err != nil {
		t.Fatal(err)
	}
	si := readStartInfo(t, mustRead(t, mem, PVHInfoAddr, pvhInfoSize))
	if si.NrModules != 0 || si.ModlistPaddr != 0 || si.RSDPPaddr != 0 {
		t.Errorf("start info %+v: want no modules and no RSDP", si)
	}
}

func TestPVHNoteForms(t *testing.T) {
	cases := []struct {
		name string
		edit func(o *elfOpts)
	}{
		{"4-byte desc in ELF64", func(o *elfOpts) { o.descSize = 4 }},
		{"section only", func(o *elfOpts) { o.noteInSec = true }},
		{"after other notes", func(o *elfOpts) {
			o.notes = append(xenNote("GNU", 3, []byte{1, 2, 3, 4, 5}), xenNote("Xen", 5, []byte("xen-3.0"))...)
			o.notes = append(o.notes, entryNote(o.entry, 8)...)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := pvhDefaults()
			c.edit(&o)
			img := makeELF(o)
			k, err := DetectKind(bytes.NewReader(img), int64(len(img)))
			if err != nil || k != KindPVH {
				t.Fatalf("DetectKind = %v, %v", k, err)
			}
			e, err := loadBytes(newMem(t, 64<<20), img, nil, "", 1)
			if err != nil || e.RIP != o.entry {
				t.Fatalf("Load: %v (entry %+v)", err, e)
			}
		})
	}
}

func TestPVHErrors(t *testing.T) {
	cases := []struct {
		name   string
		edit   func(o *elfOpts)
		target error
		field  string
	}{
		{"no note", func(o *elfOpts) { o.notes = xenNote("GNU", 3, []byte{1, 2, 3, 4}) }, ErrNoPVHEntry, "XEN_ELFNOTE_PHYS32_ENTRY"},
		{"note of other owner", func(o *elfOpts) { o.notes = xenNote("Xyz", 18, make([]byte, 8)) }, ErrNoPVHEntry, "CONFIG_PVH"},
		{"desc size", func(o *elfOpts) { o.notes = xenNote("Xen", 18, make([]byte, 6)) }, ErrBadKernel, "descsz is 6"},
		{"entry above 4G", func(o *elfOpts) { o.entry = 1 << 32 }, ErrBadKernel, "not a 32-bit address"},
		{"entry outside segments", func(o *elfOpts) { o.entry = 0x1000000 + 8192 + 16 }, ErrBadKernel, "not inside a loaded segment"},
		{"truncated note", func(o *elfOpts) { o.notes = entryNote(o.entry, 8)[:8] }, ErrBadKernel, "header needs 12"},
		{"note sizes past end", func(o *elfOpts) {
			n := entryNote(o.entry, 8)
			binary.LittleEndian.PutUint32(n[4:], 0xfffffff0)
			o.notes = n
		}, ErrBadKernel, "run past the end"},
		{"machine", func(o *elfOpts) { o.machine = elf.EM_AARCH64 }, ErrBadKernel, "machine"},
		{"type", func(o *elfOpts) { o.typ = elf.ET_DYN }, ErrBadKernel, "ET_EXEC"},
		{"filesz > memsz", func(o *elfOpts) { o.segs[0].memsz = 100 }, ErrBadKernel, "p_filesz"},
		{"overlap", func(o *elfOpts) { o.segs[1].paddr = 0x1000000 + 4096 }, ErrBadKernel, "overlap"},
		{"paddr overflow", func(o *elfOpts) { o.segs[1].paddr = 1<<64 - 100 }, ErrBadKernel, "overflows"},
		{"below 1 MiB", func(o *elfOpts) {
			o.segs[0].paddr, o.entry = 0x8000, 0x8000
		}, ErrNoRoom, "outside low RAM"},
		{"past RAM", func(o *elfOpts) { o.segs[1].paddr = 64<<20 - 2048 }, ErrNoRoom, "outside low RAM"},
		{"in MMIO hole", func(o *elfOpts) { o.segs[1].paddr = MMIOBase }, ErrNoRoom, "outside low RAM"},
		{"no loads", func(o *elfOpts) { o.segs = nil }, ErrBadKernel, "no PT_LOAD"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := pvhDefaults()
			c.edit(&o)
			_, err := loadBytes(newMem(t, 64<<20), makeELF(o), nil, "", 1)
			if !errors.Is(err, c.target) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want %v naming %q", err, c.target, c.field)
			}
		})
	}
}

func TestPVHSegmentPastFile(t *testing.T) {
	img := makeELF(pvhDefaults())
	// Cut the file inside the second segment's data.
	img = img[:len(img)-1000]
	_, err := loadBytes(newMem(t, 64<<20), img, nil, "", 1)
	if !errors.Is(err, ErrBadKernel) {
		t.Fatalf("got %v, want ErrBadKernel", err)
	}
}

func TestPVHInitrdDoesNotFit(t *testing.T) {
	// The kernel ends at 17 MiB + 4 KiB: 47 MiB - 4 KiB are left.
	img := makeELF(pvhDefaults())
	if _, err := loadBytes(newMem(t, 64<<20), img, make([]byte, 47<<20-4096), "", 1); err != nil {
		t.Fatalf("initrd filling the rest of RAM: %v", err)
	}
	_, err := loadBytes(newMem(t, 64<<20), img, make([]byte, 47<<20-4095), "", 1)
	if !errors.Is(err, ErrNoRoom) {
		t.Fatalf("got %v, want ErrNoRoom", err)
	}
}

// TestPVHToolchainELF assembles and links a tiny PVH guest with the system
// toolchain, the way test guests are built, and loads it.
func TestPVHToolchainELF(t *testing.T) {
	as := testenv.MustHaveCommand(t, "as", "binutils")
	ld := testenv.MustHaveCommand(t, "ld", "binutils")
	dir := t.TempDir()
	src := `
	.section .note.Xen, "a", @note
	.p2align 2
	.long 4, 4, 18
	.asciz "Xen"
	.long _start
	.text
	.code32
	.globl _start
_start:
	movb $0x31, %al
	outb %al, $0xf4
	hlt
	.bss
	.space 8192
`
	if err := os.WriteFile(filepath.Join(dir, "g.S"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) {
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			testenv.Missing(t, testenv.Tools, "%s failed (toolchain unusable here): %v\n%s", name, err, out)
		}
	}
	run(as, "--64", "-o", filepath.Join(dir, "g.o"), filepath.Join(dir, "g.S"))
	run(ld, "-m", "elf_x86_64", "-static", "-nostdlib", "-Ttext=0x200000", "-o", filepath.Join(dir, "g.elf"), filepath.Join(dir, "g.o"))
	img, err := os.ReadFile(filepath.Join(dir, "g.elf"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatal(err)
	}
	start := uint64(0)
	syms, _ := f.Symbols()
	for _, s := range syms {
		if s.Name == "_start" {
			start = s.Value
		}
	}
	mem := newMem(t, 64<<20)
	e, err := loadBytes(mem, img, nil, "", 1)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != KindPVH || e.RIP != start || start == 0 {
		t.Fatalf("entry %#x kind %v, want _start %#x", e.RIP, e.Kind, start)
	}
	if got := mustRead(t, mem, start, 5); !bytes.Equal(got, []byte{0xb0, 0x31, 0xe6, 0xf4, 0xf4}) {
		t.Errorf("code at _start: % x", got)
	}
}
