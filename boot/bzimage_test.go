package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

func TestBzImageLoad(t *testing.T) {
	mem := newMem(t, 64<<20)
	o := bzDefaults()
	o.trailer = 1472 // like Debian's appended signature: not loaded
	img := makeBzImage(o)
	initrd := bytes.Repeat([]byte("initrd!"), 10000)
	cmdline := "console=ttyS0 panic=-1"
	e, err := loadBytes(mem, img, initrd, cmdline, 2)
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != KindBzImage || e.Mode != Mode64 {
		t.Fatalf("kind %v mode %v, want bzImage Mode64", e.Kind, e.Mode)
	}
	setup := 5 * 512
	if got := mustRead(t, mem, KernelAddr, uint64(o.payload)); !bytes.Equal(got, img[setup:setup+o.payload]) {
		t.Error("protected-mode kernel at 1 MiB differs from the file")
	}
	if got := mustRead(t, mem, KernelAddr+uint64(o.payload), 16); !bytes.Equal(got, make([]byte, 16)) {
		t.Errorf("bytes past syssize were loaded: % x", got)
	}

	zp := mustRead(t, mem, ZeroPageAddr, zeroPageSize)
	le := binary.LittleEndian
	// The setup header is copied verbatim, except the loader's fields.
	for off := setupSectsOff; off < 0x26c; off++ {
		switch {
		case off == typeOfLoaderOff, off == loadFlagsOff,
			off >= ramdiskImageOff && off < ramdiskImageOff+8,
			off >= heapEndPtrOff && off < heapEndPtrOff+2,
			off >= cmdLinePtrOff && off < cmdLinePtrOff+4:
			continue
		}
		if zp[off] != img[off] {
			t.Fatalf("zero page byte %#x = %#x, kernel header has %#x", off, zp[off], img[off])
		}
	}
	if zp[0x26c] != 0 || zp[0x1ef] != 0 {
		t.Error("bytes outside the setup header (sentinel, past its end) are not zero")
	}
	if zp[typeOfLoaderOff] != 0xff {
		t.Errorf("type_of_loader %#x, want 0xff", zp[typeOfLoaderOff])
	}
	if zp[loadFlagsOff] != loadedHigh|canUseHeap {
		t.Errorf("loadflags %#x, want LOADED_HIGH|CAN_USE_HEAP", zp[loadFlagsOff])
	}
	if v := le.Uint16(zp[heapEndPtrOff:]); v != 0xfe00 {
		t.Errorf("heap_end_ptr %#x", v)
	}
	if v := le.Uint32(zp[cmdLinePtrOff:]); v != CmdlineAddr {
		t.Errorf("cmd_line_ptr %#x, want %#x", v, CmdlineAddr)
	}
	if got := mustRead(t, mem, CmdlineAddr, uint64(len(cmdline)+1)); string(got) != cmdline+"\x00" {
		t.Errorf("command line in memory %q", got)
	}
	rdAddr, rdSize := uint64(le.Uint32(zp[ramdiskImageOff:])), uint64(le.Uint32(zp[ramdiskSizeOff:]))
	if rdSize != uint64(len(initrd)) || le.Uint32(zp[zpExtRamdiskImageOff:]) != 0 || le.Uint32(zp[zpExtRamdiskSizeOff:]) != 0 {
		t.Errorf("ramdisk size %d (ext fields %#x %#x), want %d", rdSize, le.Uint32(zp[zpExtRamdiskImageOff:]), le.Uint32(zp[zpExtRamdiskSizeOff:]), len(initrd))
	}
	// Page-aligned at the top of RAM: the highest aligned address that fits.
	if want := (uint64(64<<20) - uint64(len(initrd))) &^ 0xfff; rdAddr != want {
		t.Errorf("ramdisk_image %#x, want %#x", rdAddr, want)
	}
	if got := mustRead(t, mem, rdAddr, rdSize); !bytes.Equal(got, initrd) {
		t.Error("initrd in memory differs")
	}
	if v := le.Uint64(zp[zpACPIRSDPAddrOff:]); v != ACPIAddr {
		t.Errorf("acpi_rsdp_addr %#x, want %#x", v, ACPIAddr)
	}
	if n := zp[zpE820EntriesOff]; n != 3 {
		t.Errorf("e820_entries %d, want 3", n)
	}

	if e.RIP != KernelAddr+0x200 || e.RSI != ZeroPageAddr || e.CR3 != PML4Addr {
		t.Errorf("RIP %#x RSI %#x CR3 %#x", e.RIP, e.RSI, e.CR3)
	}
	if e.CR0 != 0x80000031 || e.CR4 != 0x20 || e.EFER != 0x500 || e.RFLAGS != 2 {
		t.Errorf("CR0 %#x CR4 %#x EFER %#x RFLAGS %#x", e.CR0, e.CR4, e.EFER, e.RFLAGS)
	}
	if e.CS.Selector != 0x10 || !e.CS.L || e.CS.DB || e.DS.Selector != 0x18 {
		t.Errorf("CS %+v DS %+v: want __BOOT_CS 0x10 (64-bit) and __BOOT_DS 0x18", e.CS, e.DS)
	}
}

func TestBzImageNoACPIAndOldProtocolRSDP(t *testing.T) {
	mem := newMem(t, 64<<20)
	img := makeBzImage(bzDefaults())
	_, err := Load(mem, Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), CPUs: 1, NoACPI: true})
	if err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint64(mustRead(t, mem, ZeroPageAddr+zpACPIRSDPAddrOff, 8)); v != 0 {
		t.Errorf("acpi_rsdp_addr %#x without ACPI", v)
	}
	if got := mustRead(t, mem, ACPIAddr, 8); string(got) == "RSD PTR " {
		t.Error("RSDP written with NoACPI")
	}
	if got := mustRead(t, mem, MPTableAddr, 4); string(got) != "_MP_" {
		t.Error("no MP table without ACPI")
	}

	// Protocol 2.13 has no acpi_rsdp_addr: the field stays 0 (the kernel
	// finds the RSDP by scanning the BIOS area).
	o := bzDefaults()
	o.version = 0x020d
	img = makeBzImage(o)
	mem = newMem(t, 64<<20)
	if _, err := loadBytes(mem, img, nil, "", 1); err != nil {
		t.Fatal(err)
	}
	if v := binary.LittleEndian.Uint64(mustRead(t, mem, ZeroPageAddr+zpACPIRSDPAddrOff, 8)); v != 0 {
		t.Errorf("acpi_rsdp_addr %#x written for protocol 2.13", v)
	}
}

func TestBzImageHeaderErrors(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(b []byte) []byte
		field string
	}{
		{"boot flag", func(b []byte) []byte { b[bootFlagOff] = 0; return b }, "boot_flag"},
		{"old protocol", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[versionOff:], 0x020a); return b }, "version 2.10"},
		{"header end", func(b []byte) []byte { b[jumpOff+1] = 0x50; return b }, "setup header ends"},
		{"loaded high", func(b []byte) []byte { b[loadFlagsOff] = 0; return b }, "LOADED_HIGH"},
		{"kernel64", func(b []byte) []byte { binary.LittleEndian.PutUint16(b[xloadflagsOff:], 0x7e); return b }, "XLF_KERNEL_64"},
		{"setup sects", func(b []byte) []byte { b[setupSectsOff] = 250; return b[:0x1000] }, "setup_sects"},
		{"syssize zero", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[sysSizeOff:], 0); return b }, "syssize is 0"},
		{"syssize past end", func(b []byte) []byte { return b[:len(b)-16] }, "syssize"},
		{"alignment", func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[kernelAlignOff:], 0x300000)
			return b
		}, "kernel_alignment"},
		{"alignment zero", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[kernelAlignOff:], 0); return b }, "kernel_alignment"},
		{"pref below 1M", func(b []byte) []byte {
			b[relocatableOff] = 0
			binary.LittleEndian.PutUint64(b[prefAddressOff:], 0x8000)
			return b
		}, "pref_address"},
		{"init size", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[initSizeOff:], 0); return b }, "init_size"},
		{"truncated header", func(b []byte) []byte { return b[:0x250] }, "shorter than the setup header"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := bzDefaults()
			img := c.edit(makeBzImage(o))
			_, err := loadBytes(newMem(t, 64<<20), img, nil, "", 1)
			if !errors.Is(err, ErrBadKernel) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want ErrBadKernel naming %q", err, c.field)
			}
		})
	}
}

func TestBzImageMagicMissing(t *testing.T) {
	img := makeBzImage(bzDefaults())
	copy(img[hdrMagicOff:], "HdrX")
	_, err := loadBytes(newMem(t, 64<<20), img, nil, "", 1)
	if !errors.Is(err, ErrNotKernel) || !strings.Contains(err.Error(), "boot sector") {
		t.Fatalf("got %v, want ErrNotKernel for a boot sector without HdrS", err)
	}
}

func TestBzImageSetupSectsZeroMeansFour(t *testing.T) {
	o := bzDefaults()
	o.setupSects = 0
	img := makeBzImage(o)
	mem := newMem(t, 64<<20)
	if _, err := loadBytes(mem, img, nil, "", 1); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, mem, KernelAddr, 64); !bytes.Equal(got, img[5*512:5*512+64]) {
		t.Error("setup_sects 0 did not mean 4 sectors of setup")
	}
}

func TestBzImageFit(t *testing.T) {
	t.Run("init_size past RAM", func(t *testing.T) {
		o := bzDefaults()
		o.initSize = 0x3000000 // 16 MiB + 48 MiB = all of 64 MiB...
		if _, err := loadBytes(newMem(t, 64<<20), makeBzImage(o), nil, "", 1); err != nil {
			t.Fatalf("init_size ending exactly at RAM end: %v", err)
		}
		o.initSize += 0x1000 // ...and one page more does not fit
		_, err := loadBytes(newMem(t, 64<<20), makeBzImage(o), nil, "", 1)
		if !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "init_size") {
			t.Fatalf("got %v, want ErrNoRoom naming init_size", err)
		}
	})
	t.Run("non-relocatable runs at pref_address", func(t *testing.T) {
		o := bzDefaults()
		o.relocatable = 0
		o.prefAddress = 0x2000000
		o.initSize = 0x2000000
		if _, err := loadBytes(newMem(t, 64<<20), makeBzImage(o), nil, "", 1); err != nil {
			t.Fatal(err)
		}
		o.initSize = 0x2001000
		if _, err := loadBytes(newMem(t, 64<<20), makeBzImage(o), nil, "", 1); !errors.Is(err, ErrNoRoom) {
			t.Fatalf("got %v, want ErrNoRoom", err)
		}
	})
	t.Run("initrd too large", func(t *testing.T) {
		// Kernel owns [1 MiB, 32 MiB): 32 MiB remain for the initrd.
		mem := newMem(t, 64<<20)
		img := makeBzImage(bzDefaults())
		if _, err := loadBytes(mem, img, make([]byte, 32<<20), "", 1); err != nil {
			t.Fatalf("32 MiB initrd above a kernel ending at 32 MiB: %v", err)
		}
		if v := binary.LittleEndian.Uint32(mustRead(t, mem, ZeroPageAddr+ramdiskImageOff, 4)); v != 32<<20 {
			t.Errorf("ramdisk_image %#x, want 32 MiB", v)
		}
		_, err := loadBytes(newMem(t, 64<<20), img, make([]byte, 32<<20+1), "", 1)
		if !errors.Is(err, ErrNoRoom) || !strings.Contains(err.Error(), "initrd") {
			t.Fatalf("got %v, want ErrNoRoom for the initrd", err)
		}
	})
	t.Run("initrd below initrd_addr_max", func(t *testing.T) {
		o := bzDefaults()
		o.initrdMax = 0x2ffffff // last byte at 48 MiB - 1
		mem := newMem(t, 64<<20)
		if _, err := loadBytes(mem, makeBzImage(o), make([]byte, 5000), "", 1); err != nil {
			t.Fatal(err)
		}
		if v := binary.LittleEndian.Uint32(mustRead(t, mem, ZeroPageAddr+ramdiskImageOff, 4)); v != 0x3000000-0x2000 {
			t.Errorf("ramdisk_image %#x, want %#x", v, 0x3000000-0x2000)
		}
	})
	t.Run("cmdline_size", func(t *testing.T) {
		o := bzDefaults()
		o.cmdlineSize = 10
		if _, err := loadBytes(newMem(t, 64<<20), makeBzImage(o), nil, "0123456789", 1); err != nil {
			t.Fatal(err)
		}
		_, err := loadBytes(newMem(t, 64<<20), makeBzImage(o), nil, "0123456789a", 1)
		if !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "cmdline_size") {
			t.Fatalf("got %v, want ErrBadConfig naming cmdline_size", err)
		}
	})
}
