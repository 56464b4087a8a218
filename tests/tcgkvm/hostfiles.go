package main

import (
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// vmFile is a host file shipped into the VM at path VM.
type vmFile struct {
	VM   string // absolute path in the VM
	Host string // host path (symbolic links are followed)
	Perm uint64 // permission bits in the VM
}

// libPath is where a dynamic executable's libraries are looked for: the
// glibc dynamic loader's system search path on Debian. In the VM, which has
// no ld.so.cache, the loader searches the same directories.
const libPath = "/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:/lib:/usr/lib"

// commandPath is where a -host-files name without a slash is looked for
// after PATH: mkfs.ext4 and debugfs live in /usr/sbin, off a user's PATH.
const commandPath = "/usr/sbin:/sbin"

// resolveHostFiles turns the comma-separated -host-files list into the
// files to ship, each at its host path: an entry without a slash is a
// command (PATH, then /usr/sbin and /sbin); a dynamically linked ELF
// executable brings its interpreter and every library it needs,
// transitively, so it runs in the VM, which has no libc of its own.
func resolveHostFiles(list string) ([]vmFile, error) {
	var out []vmFile
	seen := map[string]bool{}
	add := func(vm, host string, perm uint64) {
		if !seen[vm] {
			seen[vm] = true
			out = append(out, vmFile{VM: vm, Host: host, Perm: perm})
		}
	}
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		p, err := findHostFile(name)
		if err != nil {
			return nil, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("tcgkvm: -host-files %s: %w", name, err)
		}
		add(p, p, uint64(fi.Mode().Perm()))
		deps, err := elfDeps(p)
		if err != nil {
			return nil, fmt.Errorf("tcgkvm: -host-files %s: %w", name, err)
		}
		for _, d := range deps {
			add(d, d, 0o755)
		}
	}
	return out, nil
}

// findHostFile resolves a -host-files entry to an absolute host path.
func findHostFile(name string) (string, error) {
	if strings.Contains(name, "/") {
		p, err := filepath.Abs(name)
		if err != nil {
			return "", fmt.Errorf("tcgkvm: -host-files %s: %w", name, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return filepath.Abs(p)
	}
	for _, d := range filepath.SplitList(commandPath) {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("tcgkvm: -host-files %s: not on PATH, in /usr/sbin or /sbin", name)
}

// elfDeps returns the interpreter and the libraries, transitively, that
// the file at p needs to run; none if p is not a dynamically linked ELF
// file (a script, a static binary, a data file).
func elfDeps(p string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	var walk func(file string, top bool) error
	walk = func(file string, top bool) error {
		if top && !isELF(file) {
			return nil // a script or data file: shipped as it is
		}
		f, err := elf.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		for _, prog := range f.Progs {
			if prog.Type != elf.PT_INTERP {
				continue
			}
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return fmt.Errorf("%s: PT_INTERP: %w", file, err)
			}
			if interp := strings.TrimRight(string(b), "\x00"); !seen[interp] {
				seen[interp] = true
				out = append(out, interp)
			}
		}
		needed, err := f.ImportedLibraries()
		if err != nil {
			return fmt.Errorf("%s: DT_NEEDED: %w", file, err)
		}
		for _, lib := range needed {
			lp, err := findLib(lib)
			if err != nil {
				return fmt.Errorf("%s needs %s: %w", file, lib, err)
			}
			if seen[lp] {
				continue
			}
			seen[lp] = true
			out = append(out, lp)
			if err := walk(lp, false); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(p, true); err != nil {
		return nil, err
	}
	return out, nil
}

// isELF reports whether the file at p starts with the ELF magic number.
func isELF(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var magic [4]byte
	_, err = io.ReadFull(f, magic[:])
	return err == nil && string(magic[:]) == elf.ELFMAG
}

// findLib finds a library by its DT_NEEDED name in libPath.
func findLib(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, d := range filepath.SplitList(libPath) {
		p := filepath.Join(d, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("not in %s: %w", libPath, fs.ErrNotExist)
}
