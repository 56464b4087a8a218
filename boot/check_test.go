package boot

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// TestCheckAgreesWithLoad checks that Check, which reads only headers and
// needs no guest memory, rejects what Load rejects, with the same sentinel
// and message, and accepts what Load accepts.
func TestCheckAgreesWithLoad(t *testing.T) {
	bz := makeBzImage(bzDefaults()) // cmdline_size 0x7ff; runs at 16 MiB for 16 MiB
	lowInitrdMax := bzDefaults()
	lowInitrdMax.initrdMax = 0x2ffffff // the initrd must end below 48 MiB
	pvh := makeELF(pvhDefaults())      // segments at 16 MiB
	cases := []struct {
		name    string
		kernel  []byte
		initrd  int // bytes; 0 for none
		cmdline string
		ram     uint64
		err     error  // nil: both accept
		want    string // in the message
	}{
		{"bzImage", bz, 1 << 20, "console=ttyS0", 64 << 20, nil, ""},
		{"bzImage command line past cmdline_size", bz, 0, strings.Repeat("x", 10<<10), 64 << 20, ErrBadConfig, "cmdline_size"},
		{"bzImage longest command line", bz, 0, strings.Repeat("x", 0x7ff), 64 << 20, nil, ""},
		{"bzImage initrd larger than RAM", bz, 65 << 20, "", 64 << 20, ErrNoRoom, "initrd is"},
		{"bzImage initrd beside the kernel", bz, 40 << 20, "", 64 << 20, ErrNoRoom, "initrd of"},
		{"bzImage initrd above initrd_addr_max", makeBzImage(lowInitrdMax), 20 << 20, "", 128 << 20, ErrNoRoom, "initrd of"},
		{"bzImage kernel space past RAM", bz, 0, "", 24 << 20, ErrNoRoom, "init_size"},
		{"PVH", pvh, 1 << 20, "console=ttyS0", 64 << 20, nil, ""},
		{"PVH initrd larger than RAM", pvh, 65 << 20, "", 64 << 20, ErrNoRoom, "initrd is"},
		{"PVH initrd beside the kernel", pvh, 50 << 20, "", 64 << 20, ErrNoRoom, "initrd of"},
		{"PVH segment past RAM", pvh, 0, "", MinRAM, ErrNoRoom, "ELF segment"},
		{"PVH command line past CmdlineMax", pvh, 0, strings.Repeat("x", CmdlineMax), 64 << 20, ErrBadConfig, "command line"},
		{"not a kernel", []byte(strings.Repeat("notes\n", 200)), 0, "", 64 << 20, ErrNotKernel, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Kernel: bytes.NewReader(c.kernel), KernelSize: int64(len(c.kernel)), Cmdline: c.cmdline, CPUs: 1}
			if c.initrd > 0 {
				cfg.Initrd, cfg.InitrdSize = bytes.NewReader(make([]byte, c.initrd)), int64(c.initrd)
			}
			checkErr := Check(cfg, c.ram)
			_, loadErr := Load(newMem(t, c.ram), cfg)
			for _, r := range []struct {
				what string
				err  error
			}{{"Check", checkErr}, {"Load", loadErr}} {
				if c.err == nil {
					if r.err != nil {
						t.Errorf("%s: %v, want success", r.what, r.err)
					}
					continue
				}
				if !errors.Is(r.err, c.err) || !strings.Contains(r.err.Error(), c.want) {
					t.Errorf("%s: %v, want %v naming %q", r.what, r.err, c.err, c.want)
				}
			}
			if checkErr != nil && loadErr != nil && checkErr.Error() != loadErr.Error() {
				t.Errorf("Check says %q, Load says %q", checkErr, loadErr)
			}
		})
	}
}
