package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
)

// modules are the kernel modules /init loads, in dependency order: kvm
// needs irqbypass, kvm-amd needs kvm and ccp (for SEV); tun, bridge (with
// llc and stp) and veth serve the network tests, loop the block-device disk
// tests.
var modules = []string{"irqbypass", "kvm", "ccp", "kvm-amd", "tun", "llc", "stp", "bridge", "veth", "loop"}

// l1Kernel is an extracted Debian kernel: the bzImage and the modules above.
type l1Kernel struct {
	Package string // e.g. linux-image-6.1.0-57-amd64
	Vmlinuz string
	ModDir  string // holds <name>.ko for every entry of modules
}

// resolveKernelPackage names the versioned package linux-image-amd64
// currently depends on, from apt's local lists (no network).
func resolveKernelPackage(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "apt-cache", "depends", "linux-image-amd64").Output()
	if err != nil {
		return "", fmt.Errorf("tcgkvm: apt-cache depends linux-image-amd64: %w (pass -kernel-pkg)", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: "); ok && strings.HasPrefix(dep, "linux-image-") {
			return dep, nil
		}
	}
	return "", fmt.Errorf("tcgkvm: apt-cache depends linux-image-amd64 names no linux-image-* package (pass -kernel-pkg)")
}

// ensureKernel returns pkg's kernel and modules from cacheDir, downloading
// the .deb with apt-get and extracting only the files needed on a miss.
func ensureKernel(ctx context.Context, cacheDir, pkg string) (l1Kernel, error) {
	dir := filepath.Join(cacheDir, "kernels", pkg)
	k := l1Kernel{Package: pkg, Vmlinuz: filepath.Join(dir, "vmlinuz"), ModDir: filepath.Join(dir, "modules")}
	if kernelComplete(k) {
		return k, nil
	}
	dl, err := os.MkdirTemp(cacheDir, ".download-")
	if err != nil {
		return k, fmt.Errorf("tcgkvm: download directory: %w", err)
	}
	defer os.RemoveAll(dl)
	cmd := exec.CommandContext(ctx, "apt-get", "download", pkg)
	cmd.Dir = dl
	if out, err := cmd.CombinedOutput(); err != nil {
		return k, fmt.Errorf("tcgkvm: apt-get download %s: %w\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dl, pkg+"_*.deb"))
	if len(debs) != 1 {
		return k, fmt.Errorf("tcgkvm: apt-get download %s left %d matching .deb files, want 1", pkg, len(debs))
	}
	stage := dir + ".tmp"
	os.RemoveAll(stage)
	if err := extractKernel(ctx, debs[0], stage); err != nil {
		os.RemoveAll(stage)
		return k, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(stage, dir); err != nil {
		return k, fmt.Errorf("tcgkvm: caching kernel: %w", err)
	}
	if !kernelComplete(k) {
		return k, fmt.Errorf("tcgkvm: %s lacks vmlinuz or one of the modules %v", pkg, modules)
	}
	return k, nil
}

func kernelComplete(k l1Kernel) bool {
	if fi, err := os.Stat(k.Vmlinuz); err != nil || fi.Size() == 0 {
		return false
	}
	for _, m := range modules {
		if _, err := os.Stat(filepath.Join(k.ModDir, m+".ko")); err != nil {
			return false
		}
	}
	return true
}

// extractKernel streams deb's file system through dpkg-deb and keeps
// boot/vmlinuz-* as dir/vmlinuz and the wanted modules as dir/modules/*.ko;
// the rest (hundreds of MB of drivers) is never written.
func extractKernel(ctx context.Context, deb, dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return fmt.Errorf("tcgkvm: %w", err)
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("tcgkvm: dpkg-deb: %w", err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("tcgkvm: dpkg-deb --fsys-tarfile %s: %w", deb, err)
	}
	want := map[string]bool{}
	for _, m := range modules {
		want[m+".ko"] = true
	}
	tr := tar.NewReader(pipe)
	var terr error
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			terr = fmt.Errorf("tcgkvm: reading %s: %w", deb, err)
			break
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(h.Name, "./")
		base := path.Base(name)
		var dst string
		switch {
		case strings.HasPrefix(name, "boot/vmlinuz-"):
			dst = filepath.Join(dir, "vmlinuz")
		case strings.HasPrefix(name, "lib/modules/") && want[base]:
			dst = filepath.Join(dir, "modules", base)
		case strings.HasPrefix(name, "lib/modules/") && want[strings.TrimSuffix(base, path.Ext(base))]:
			terr = fmt.Errorf("tcgkvm: %s ships compressed module %s; busybox insmod needs plain .ko", deb, name)
		default:
			continue
		}
		if terr != nil {
			break
		}
		if err := writeFile(dst, tr); err != nil {
			terr = err
			break
		}
	}
	io.Copy(io.Discard, pipe)
	if err := cmd.Wait(); err != nil && terr == nil {
		terr = fmt.Errorf("tcgkvm: dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, strings.TrimSpace(stderr.String()))
	}
	return terr
}

func writeFile(dst string, r io.Reader) error {
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("tcgkvm: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("tcgkvm: writing %s: %w", dst, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tcgkvm: writing %s: %w", dst, err)
	}
	return nil
}
