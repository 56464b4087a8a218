// Package testkernel writes synthetic kernel images for tests that need a
// file boot.DetectKind and boot.Check accept but never run: the setup
// header of a bzImage and a small payload, no code. Tests of configuration
// errors (a command line past the kernel's cmdline_size, an initrd that does
// not fit) use them without KVM and without building a kernel.
package testkernel

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// Setup header offsets (Documentation/arch/x86/boot.rst).
const (
	setupSectsOff    = 0x1f1
	sysSizeOff       = 0x1f4
	bootFlagOff      = 0x1fe
	jumpOff          = 0x200
	hdrMagicOff      = 0x202
	versionOff       = 0x206
	loadFlagsOff     = 0x211
	initrdAddrMaxOff = 0x22c
	kernelAlignOff   = 0x230
	relocatableOff   = 0x234
	xloadflagsOff    = 0x236
	cmdlineSizeOff   = 0x238
	prefAddressOff   = 0x258
	initSizeOff      = 0x260

	setupSects = 4
	payload    = 64 << 10
)

// BzImage is a synthetic bzImage's adjustable header fields.
type BzImage struct {
	// CmdlineSize is cmdline_size: the longest command line the kernel
	// accepts, without its NUL (Linux's default is 2047).
	CmdlineSize uint32
	// InitSize is init_size: the bytes the kernel needs from its runtime
	// address (16 MiB) to decompress and run; 0 means 16 MiB.
	InitSize uint32
}

// Bytes returns the image: a protocol 2.15 relocatable 64-bit bzImage
// header and a 64 KiB payload.
func (o BzImage) Bytes() []byte {
	initSize := o.InitSize
	if initSize == 0 {
		initSize = 16 << 20
	}
	b := make([]byte, (setupSects+1)*512+payload)
	le := binary.LittleEndian
	b[setupSectsOff] = setupSects
	le.PutUint32(b[sysSizeOff:], payload/16)
	le.PutUint16(b[bootFlagOff:], 0xaa55)
	b[jumpOff], b[jumpOff+1] = 0xeb, 0x6a // the header ends at 0x26c
	copy(b[hdrMagicOff:], "HdrS")
	le.PutUint16(b[versionOff:], 0x020f)
	b[loadFlagsOff] = 1 // LOADED_HIGH
	le.PutUint32(b[initrdAddrMaxOff:], 0x7fffffff)
	le.PutUint32(b[kernelAlignOff:], 0x200000)
	b[relocatableOff] = 1
	le.PutUint16(b[xloadflagsOff:], 1) // XLF_KERNEL_64
	le.PutUint32(b[cmdlineSizeOff:], o.CmdlineSize)
	le.PutUint64(b[prefAddressOff:], 0x1000000)
	le.PutUint32(b[initSizeOff:], initSize)
	return b
}

// WriteBzImage writes o.Bytes() to a file in t's temporary directory and
// returns its path.
func WriteBzImage(t testing.TB, o BzImage) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "bzImage")
	if err := os.WriteFile(p, o.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
