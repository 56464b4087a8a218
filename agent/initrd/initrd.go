// Package initrd builds the initrd that puts corral-agent into a guest: the
// user's initrd, if any, followed by a newc cpio archive made on the fly
// (u-root's pkg/cpio) holding the static agent at /corral/agent with /init
// pointing at it. The kernel unpacks concatenated archives in order, so the
// agent's /init replaces any /init of the user's initrd, and everything
// else of the user's is kept.
//
// The agent binary is never committed. Tests and development builds make
// it with BuildAgent (go build into a cache directory). A release builds it
// the same way (CGO_ENABLED=0 go build -trimpath -ldflags=-s
// ./cmd/corral-agent) into a release-only directory and embeds it with
// //go:embed from a file generated there, then passes those bytes to Write.
package initrd

import (
	"bufio"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"

	"github.com/u-root/u-root/pkg/cpio"
)

// Paths in the guest.
const (
	AgentPath = "/corral/agent"
	InitPath  = "/init"
)

// Write writes user (nil for none) and then the agent archive to w. A user
// initrd whose length is not a multiple of 4 is padded with zeros, as the
// kernel wants each archive 4-byte aligned.
func Write(w io.Writer, user io.Reader, agent []byte) error {
	if err := CheckAgent(agent); err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	if user != nil {
		n, err := io.Copy(bw, user)
		if err != nil {
			return fmt.Errorf("initrd: copying the user's initrd: %w", err)
		}
		if pad := (4 - n%4) % 4; pad != 0 {
			bw.Write(make([]byte, pad))
		}
	}
	rw := cpio.Newc.Writer(bw)
	recs := []cpio.Record{
		cpio.Directory("corral", 0o755),
		cpio.StaticRecord(agent, cpio.Info{Name: AgentPath[1:], Mode: cpio.S_IFREG | 0o755}),
		cpio.Symlink(InitPath[1:], AgentPath[1:]),
		// The kernel opens /dev/console for init's stdio before it runs
		// it, so it must exist before devtmpfs is mounted.
		cpio.Directory("dev", 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
	}
	for _, d := range []string{"proc", "sys", "tmp", "run"} {
		recs = append(recs, cpio.Directory(d, 0o755))
	}
	for i, r := range recs {
		// Distinct inode numbers keep the unpacker from taking files for
		// hard links of each other.
		r.Ino = uint64(i + 1)
		r.NLink = 1
		if err := rw.WriteRecord(r); err != nil {
			return fmt.Errorf("initrd: writing %s: %w", r.Name, err)
		}
	}
	if err := cpio.WriteTrailer(rw); err != nil {
		return fmt.Errorf("initrd: writing the trailer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initrd: writing: %w", err)
	}
	return nil
}

// CheckAgent checks that agent is a static x86-64 Linux executable: a
// dynamic one would find no loader in a bare initrd.
func CheckAgent(agent []byte) error {
	return CheckAgentAt(bytesReaderAt(agent))
}

// CheckAgentAt is CheckAgent reading only the ELF headers from r, not the
// whole (15 MB for corral) executable.
func CheckAgentAt(r io.ReaderAt) error {
	f, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("initrd: the agent is not an ELF executable: %w", err)
	}
	if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("initrd: the agent is a %v %v, want an x86-64 executable", f.Machine, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return errors.New("initrd: the agent is dynamically linked; build it with CGO_ENABLED=0")
		}
	}
	return nil
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// AgentPackage is the import path BuildAgent builds.
const AgentPackage = "github.com/corral-vmm/corral/cmd/corral-agent"

// BuildAgent builds a static corral-agent for linux/amd64 into dir and
// returns its path. It must run inside this module (tests do); go build's
// cache makes repeated calls cheap.
func BuildAgent(ctx context.Context, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("initrd: agent cache: %w", err)
	}
	out := filepath.Join(dir, "corral-agent")
	tmp, err := os.CreateTemp(dir, "corral-agent-*")
	if err != nil {
		return "", fmt.Errorf("initrd: agent cache: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s", "-o", tmp.Name(), AgentPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initrd: go build %s (%s): %w: %s", AgentPackage, runtime.Version(), err, b)
	}
	// Rename is atomic: a concurrent build never leaves a half-written agent.
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("initrd: agent cache: %w", err)
	}
	return out, nil
}
