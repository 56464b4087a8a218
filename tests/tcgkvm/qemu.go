package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// -l2-qemu ships the host's QEMU into the VM so benchmarks there can run
// QEMU beside Corral on the same nested /dev/kvm (bench/agentvsqemu). QEMU
// is dynamically linked: it goes in at its host path with its interpreter
// and libraries (as -host-files does), and the firmware it opens goes to
// <binary's dir>/../share/qemu, the data directory QEMU looks in first.

// envQEMU is QEMU's path in the VM, the variable bench/ reads.
const envQEMU = "QEMU"

// qemuFirmware are the files of QEMU's data directory that -M microvm and
// -M pc (qboot or SeaBIOS) open to boot a Linux kernel under KVM with
// -nodefaults (QEMU 7.2, found with strace): microvm's qboot, the PVH
// option ROM for an ELF vmlinux, the pc BIOSes, kvmvapic and the bzImage
// loader.
var qemuFirmware = []string{"bios-microvm.bin", "pvh.bin", "qboot.rom", "bios-256k.bin", "kvmvapic.bin", "linuxboot_dma.bin"}

// qemuFiles returns what the VM needs to run the QEMU binary qemu (a name
// on PATH or a path) and its absolute path: the binary with its
// interpreter and libraries, and every qemuFirmware file its data
// directory holds (links followed: the VM gets the content). missing names
// the firmware files the host lacks (Debian's seabios package is optional);
// QEMU fails in the VM only if it opens one.
func qemuFiles(qemu string) (files []vmFile, bin string, missing []string, err error) {
	// QEMU finds its data directory from /proc/self/exe, the real path.
	bin, err = exec.LookPath(qemu)
	if err == nil {
		bin, err = filepath.EvalSymlinks(bin)
	}
	if err == nil {
		bin, err = filepath.Abs(bin)
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("tcgkvm: -l2-qemu: %w", err)
	}
	if files, err = resolveHostFiles(bin); err != nil {
		return nil, "", nil, err
	}
	dataDir := filepath.Join(filepath.Dir(bin), "..", "share", "qemu")
	for _, fw := range qemuFirmware {
		p := filepath.Join(dataDir, fw)
		switch _, err := os.Stat(p); {
		case errors.Is(err, os.ErrNotExist):
			missing = append(missing, fw)
		case err != nil:
			return nil, "", nil, fmt.Errorf("tcgkvm: -l2-qemu: %w", err)
		default:
			files = append(files, vmFile{VM: p, Host: p, Perm: 0o644})
		}
	}
	return files, bin, missing, nil
}

// mergeFiles appends add to files, leaving out paths files already ships.
func mergeFiles(files, add []vmFile) []vmFile {
	seen := map[string]bool{}
	for _, f := range files {
		seen[f.VM] = true
	}
	for _, f := range add {
		if !seen[f.VM] {
			seen[f.VM] = true
			files = append(files, f)
		}
	}
	return files
}
