package boot

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
)

func TestDetectKind(t *testing.T) {
	mbr := make([]byte, 1024)
	mbr[510], mbr[511] = 0x55, 0xaa
	cases := []struct {
		name string
		data []byte
		kind Kind
		err  error
	}{
		{"bzImage", makeBzImage(bzDefaults()), KindBzImage, nil},
		{"PVH ELF", makeELF(pvhDefaults()), KindPVH, nil},
		{"text", []byte("#!/bin/sh\necho not a kernel\n"), KindUnknown, ErrNotKernel},
		{"zeros", make([]byte, 4096), KindUnknown, ErrNotKernel},
		{"MBR", mbr, KindUnknown, ErrNotKernel},
		{"ELF magic only", []byte("\x7fELF"), KindUnknown, ErrBadKernel},
		{"ELF without note", makeELF(elfOpts{segs: pvhDefaults().segs, notes: []byte{}}), KindUnknown, ErrNoPVHEntry},
		{"HdrS only", append(make([]byte, 0x202), "HdrS"...), KindUnknown, ErrBadKernel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, err := DetectKind(bytes.NewReader(c.data), int64(len(c.data)))
			if k != c.kind || !errors.Is(err, c.err) {
				t.Fatalf("DetectKind = %v, %v; want %v, %v", k, err, c.kind, c.err)
			}
			if c.err == nil {
				return
			}
			_, err = loadBytes(newMem(t, 16<<20), c.data, nil, "", 1)
			if !errors.Is(err, c.err) {
				t.Fatalf("Load: %v, want %v", err, c.err)
			}
		})
	}
	if _, err := DetectKind(nil, 0); !errors.Is(err, ErrNotKernel) {
		t.Errorf("empty: %v", err)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindBzImage: "bzImage", KindPVH: "PVH ELF", KindUnknown: "unknown"} {
		if k.String() != want {
			t.Errorf("%d.String() = %q", k, k.String())
		}
	}
}

// failingReader fails every read.
type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk on fire") }

func TestLoadConfigErrors(t *testing.T) {
	img := makeBzImage(bzDefaults())
	good := func() Config {
		return Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), CPUs: 1}
	}
	cases := []struct {
		name  string
		mem   *guestmem.Memory
		edit  func(c *Config)
		err   error
		field string
	}{
		{"no kernel", nil, func(c *Config) { c.Kernel = nil }, ErrBadConfig, "no kernel"},
		{"zero cpus", nil, func(c *Config) { c.CPUs = 0 }, ErrBadConfig, "vCPUs"},
		{"too many cpus", nil, func(c *Config) { c.CPUs = MaxCPUs + 1 }, ErrBadConfig, "vCPUs"},
		{"initrd size without reader", nil, func(c *Config) { c.InitrdSize = 10 }, ErrBadConfig, "initrd"},
		{"cmdline too long", nil, func(c *Config) { c.Cmdline = strings.Repeat("x", CmdlineMax) }, ErrBadConfig, "command line"},
		{"cmdline NUL", nil, func(c *Config) { c.Cmdline = "a\x00b" }, ErrBadConfig, "NUL"},
		{"small RAM", newMem(t, MinRAM-4096), func(c *Config) {}, ErrBadConfig, "MiB of guest RAM"},
		{"kernel larger than RAM", newMem(t, MinRAM), func(c *Config) { c.KernelSize = MinRAM + 1 }, ErrNoRoom, "kernel is"},
		{"initrd larger than RAM", newMem(t, MinRAM), func(c *Config) {
			c.Initrd, c.InitrdSize = bytes.NewReader(nil), MinRAM+1
		}, ErrNoRoom, "initrd is"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := c.mem
			if mem == nil {
				mem = newMem(t, 64<<20)
			}
			cfg := good()
			c.edit(&cfg)
			_, err := Load(mem, cfg)
			if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("got %v, want %v naming %q", err, c.err, c.field)
			}
		})
	}
	t.Run("no memory", func(t *testing.T) {
		if _, err := Load(nil, good()); !errors.Is(err, ErrBadConfig) {
			t.Fatal(err)
		}
	})
	t.Run("memory not laid out by RAMRanges", func(t *testing.T) {
		mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: make([]byte, 8<<20)}, guestmem.Region{GPA: 16 << 20, Data: make([]byte, 16<<20)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Load(mem, good()); !errors.Is(err, ErrBadConfig) || !strings.Contains(err.Error(), "RAMRanges") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("longest command line", func(t *testing.T) {
		elf := makeELF(pvhDefaults())
		mem := newMem(t, 64<<20)
		s := strings.Repeat("y", CmdlineMax-1)
		if _, err := loadBytes(mem, elf, nil, s, 1); err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, mem, CmdlineAddr+CmdlineMax-2, 2); string(got) != "y\x00" {
			t.Errorf("end of command line %q", got)
		}
	})
	t.Run("kernel read error", func(t *testing.T) {
		cfg := good()
		cfg.Kernel = failingReader{}
		if _, err := Load(newMem(t, 64<<20), cfg); err == nil || !strings.Contains(err.Error(), "disk on fire") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("initrd shorter than its size", func(t *testing.T) {
		cfg := good()
		cfg.Initrd, cfg.InitrdSize = bytes.NewReader(make([]byte, 100)), 200
		if _, err := Load(newMem(t, 64<<20), cfg); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("got %v", err)
		}
	})
}
