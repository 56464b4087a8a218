package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Environment that names a test kernel from outside the source tree, as
// tests/tcgkvm sets it in its VM (where build-kernel.sh and the cache are
// not): FromEnv reads it.
const (
	// KernelEnv names a test kernel file: a vmlinux (PVH ELF) or a bzImage.
	KernelEnv = "CORRAL_KERNEL"
	// BzImageEnv names the same kernel as a bzImage, when KernelEnv is its vmlinux.
	BzImageEnv = "CORRAL_BZIMAGE"
	// ExtraCmdlineEnv holds kernel parameters to append to Cmdline's line
	// in this environment (tests/tcgkvm's -l2-cmdline).
	ExtraCmdlineEnv = "CORRAL_TCGKVM_CMDLINE"
)

// ErrNotKernel is returned by ImageFormat for a file that is neither an
// ELF vmlinux nor a bzImage.
var ErrNotKernel = errors.New("kernel: neither an ELF vmlinux nor a bzImage")

// Image formats as ImageFormat names them.
const (
	FormatVmlinux = "vmlinux" // ELF, booted through its PVH entry
	FormatBzImage = "bzImage" // the x86 Linux boot protocol
)

// Offsets in a bzImage's setup header (Documentation/arch/x86/boot.rst).
const (
	bzHeaderOffset = 0x202 // the "HdrS" magic
	bzHeaderMagic  = "HdrS"
	elfMagic       = "\x7fELF"
)

// ImageFormat tells a vmlinux from a bzImage by their magic numbers.
func ImageFormat(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	defer f.Close()
	var head [bzHeaderOffset + len(bzHeaderMagic)]byte
	n, err := io.ReadFull(f, head[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return "", fmt.Errorf("kernel: reading %s: %w", path, err)
	}
	switch {
	case n >= len(elfMagic) && string(head[:len(elfMagic)]) == elfMagic:
		return FormatVmlinux, nil
	case n == len(head) && bytes.Equal(head[bzHeaderOffset:], []byte(bzHeaderMagic)):
		return FormatBzImage, nil
	}
	return "", fmt.Errorf("%w: %s", ErrNotKernel, path)
}

// Given is a test kernel named by the environment. Either path may be
// empty: a test that needs that format then cannot run.
type Given struct {
	BzImage string
	Vmlinux string
	// Extra is ExtraCmdlineEnv's value, to append to the command line.
	Extra string
}

// FromEnv reads KernelEnv (a vmlinux or a bzImage, told apart by content),
// BzImageEnv and ExtraCmdlineEnv through getenv (os.Getenv). ok is false
// when KernelEnv is empty: the caller then looks in the cache (Find).
func FromEnv(getenv func(string) string) (g Given, ok bool, err error) {
	k := getenv(KernelEnv)
	if k == "" {
		return Given{}, false, nil
	}
	g.Extra = strings.TrimSpace(getenv(ExtraCmdlineEnv))
	format, err := ImageFormat(k)
	if err != nil {
		return Given{}, true, fmt.Errorf("kernel: $%s: %w", KernelEnv, err)
	}
	if format == FormatVmlinux {
		g.Vmlinux = k
	} else {
		g.BzImage = k
	}
	if bz := getenv(BzImageEnv); bz != "" {
		format, err := ImageFormat(bz)
		if err != nil {
			return Given{}, true, fmt.Errorf("kernel: $%s: %w", BzImageEnv, err)
		}
		if format != FormatBzImage {
			return Given{}, true, fmt.Errorf("kernel: $%s: %s is a %s, not a bzImage", BzImageEnv, bz, format)
		}
		g.BzImage = bz
	}
	return g, true, nil
}

// AppendCmdline returns base with extra appended (either may be empty).
func AppendCmdline(base, extra string) string {
	return strings.TrimSpace(base + " " + extra)
}
