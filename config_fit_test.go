package corral

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/internal/testkernel"
)

// sparseFile creates a file of size bytes that takes no disk space.
func sparseFile(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "initrd")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestValidateKernelFit checks that what only the loader used to find (a
// command line past the bzImage's cmdline_size, an initrd that does not fit)
// is a configuration error from Validate, before KVM is opened.
func TestValidateKernelFit(t *testing.T) {
	bz := testkernel.WriteBzImage(t, testkernel.BzImage{CmdlineSize: 2047})
	cases := []struct {
		name string
		cfg  Config
		is   error  // besides ErrConfig
		want string // in the message
	}{
		{"command line past cmdline_size", Config{Kernel: bz, Cmdline: strings.Repeat("a", 10<<10)}, boot.ErrBadConfig, "cmdline_size"},
		{"initrd larger than RAM", Config{Kernel: bz, Initrd: sparseFile(t, 65<<20), Memory: 64 << 20}, boot.ErrNoRoom, "initrd is 68157440 bytes"},
		{"initrd larger than the room beside the kernel", Config{Kernel: bz, Initrd: sparseFile(t, 40<<20), Memory: 64 << 20}, boot.ErrNoRoom, "initrd of 41943040 bytes does not fit"},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if !errors.Is(err, ErrConfig) || !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Validate() = %v; want ErrConfig and %v naming %q", c.name, err, c.is, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error is not one line: %q", c.name, err)
		}
	}
	good := Config{Kernel: bz, Cmdline: strings.Repeat("a", 2047), Initrd: sparseFile(t, 8<<20), Memory: 64 << 20}
	if err := good.Validate(); err != nil {
		t.Errorf("longest command line and an initrd that fits: %v", err)
	}
}
