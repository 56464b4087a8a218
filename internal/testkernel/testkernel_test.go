package testkernel

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/boot"
)

// TestBootAcceptsTheImage checks the image is a bzImage boot accepts, with
// the cmdline_size asked for.
func TestBootAcceptsTheImage(t *testing.T) {
	img := BzImage{CmdlineSize: 100}.Bytes()
	k, err := boot.DetectKind(bytes.NewReader(img), int64(len(img)))
	if err != nil || k != boot.KindBzImage {
		t.Fatalf("DetectKind = %v, %v", k, err)
	}
	cfg := boot.Config{Kernel: bytes.NewReader(img), KernelSize: int64(len(img)), CPUs: 1, Cmdline: strings.Repeat("x", 100)}
	if err := boot.Check(cfg, 64<<20); err != nil {
		t.Fatalf("Check with a 100-byte command line: %v", err)
	}
	cfg.Cmdline += "x"
	if err := boot.Check(cfg, 64<<20); !errors.Is(err, boot.ErrBadConfig) {
		t.Fatalf("Check with a 101-byte command line: %v, want ErrBadConfig", err)
	}
}
