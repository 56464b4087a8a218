package guests

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// sourceFS holds the guest sources: C, assembly and the linker script.
//
//go:embed src
var sourceFS embed.FS

// ErrNoCompiler is returned (wrapped) when gcc is not on PATH.
var ErrNoCompiler = errors.New("guests: gcc not found on PATH (install gcc to build the test guests)")

// ErrUnknownGuest is returned (wrapped) for a guest name not in Names().
var ErrUnknownGuest = errors.New("guests: unknown guest")

// Names lists the guests Build knows, sorted.
func Names() []string {
	return []string{"blk", "count", "fault", "halt", "hello", "net", "rtc", "smp", "spin"}
}

// librarySources are the .c files in src/ shared by several guests rather
// than being a guest's main file.
func librarySources() []string {
	return []string{"lib.c", "pci.c", "virtio.c"}
}

// guestSources lists the files (relative to src/) gcc compiles for a guest.
func guestSources(name string) ([]string, bool) {
	common := []string{"entry.S", "lib.c"}
	switch name {
	case "count", "fault", "halt", "hello", "rtc", "spin":
		return append(common, name+".c"), true
	case "smp":
		return append(common, "smp.c", "smp_trampoline.S"), true
	case "blk", "net":
		return append(common, "pci.c", "virtio.c", name+".c"), true
	}
	return nil, false
}

// compilerFlags are the gcc flags for every guest: freestanding, no SSE/MMX,
// no red zone, static, linked at 1 MiB by src/linker.ld, baseline x86-64 (no
// POPCNT/BMI), no CET notes, no build ID, and no loops turned into memcpy
// calls (lib.c provides memcpy itself).
func compilerFlags() []string {
	return []string{
		"-std=gnu11", "-O2", "-Wall", "-Wextra",
		"-march=x86-64", "-mtune=generic",
		"-ffreestanding", "-fno-builtin", "-nostdlib", "-static",
		"-mgeneral-regs-only", "-mno-sse", "-mno-mmx", "-mno-red-zone",
		"-fno-pic", "-no-pie", "-mcmodel=small",
		"-fno-stack-protector", "-fcf-protection=none", "-fno-tree-loop-distribute-patterns",
		"-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
		"-Wl,--build-id=none", "-Wl,-z,max-page-size=4096", "-Wl,-T,linker.ld",
	}
}

// Build compiles guest name with gcc into dir/<name>.elf (dir is created if
// needed) and returns that path.
func Build(name, dir string) (string, error) {
	return BuildContext(context.Background(), name, dir)
}

// BuildContext is Build with a context bounding the compiler run.
func BuildContext(ctx context.Context, name, dir string) (string, error) {
	path, _, err := build(ctx, name, dir)
	return path, err
}

// build compiles one guest and also returns gcc's diagnostics (warnings),
// so tests can insist on a clean build.
func build(ctx context.Context, name, dir string) (path, diag string, err error) {
	// gcc runs in a temporary source directory: make dir absolute first.
	if dir, err = filepath.Abs(dir); err != nil {
		return "", "", fmt.Errorf("guests: output directory: %w", err)
	}
	srcs, ok := guestSources(name)
	if !ok {
		return "", "", fmt.Errorf("%w %q (known: %s)", ErrUnknownGuest, name, strings.Join(Names(), ", "))
	}
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrNoCompiler, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("guests: creating output directory for %s: %w", name, err)
	}
	stage, err := os.MkdirTemp("", "corral-guest-src-")
	if err != nil {
		return "", "", fmt.Errorf("guests: staging sources for %s: %w", name, err)
	}
	defer os.RemoveAll(stage)
	if err := writeSources(stage); err != nil {
		return "", "", fmt.Errorf("guests: staging sources for %s: %w", name, err)
	}

	tmp, err := os.CreateTemp(dir, "."+name+"-*.elf.tmp")
	if err != nil {
		return "", "", fmt.Errorf("guests: output file for %s: %w", name, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpName) // no-op once renamed

	args := append(compilerFlags(), "-o", tmpName)
	args = append(args, srcs...)
	cmd := exec.CommandContext(ctx, gcc, args...)
	cmd.Dir = stage
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return "", out.String(), fmt.Errorf("guests: gcc building %s: %w\n%s", name, err, out.String())
	}
	if err := os.Chmod(tmpName, 0o644); err != nil {
		return "", out.String(), fmt.Errorf("guests: output file for %s: %w", name, err)
	}
	final := filepath.Join(dir, name+".elf")
	if err := os.Rename(tmpName, final); err != nil {
		return "", out.String(), fmt.Errorf("guests: placing %s: %w", name, err)
	}
	return final, out.String(), nil
}

// writeSources copies the embedded src/ tree flat into dir.
func writeSources(dir string) error {
	return fs.WalkDir(sourceFS, "src", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := sourceFS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, d.Name()), data, 0o644)
	})
}
