#!/usr/bin/env bash
# Sets up a fresh machine, builds corral and the small Linux test kernel
# (both cached), and boots Linux to a shell on this terminal, with a NIC
# whose address comes from Corral's built-in DHCP server:
#   scripts/run.sh                 boot the default Linux guest (Ctrl-A x quits)
#   scripts/run.sh --guest hello   boot the tiny hello test guest instead
#   scripts/run.sh FLAGS...        corral run FLAGS... (your own kernel)
# The first run installs Debian packages and builds the kernel: about 10
# minutes on 2 cores. Later runs start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
# Say so at once on a host without KVM, before minutes of installs and a
# kernel build that could not be booted.
if [ ! -e /dev/kvm ]; then
  echo "run: this host has no /dev/kvm: corral needs KVM (load kvm_intel or kvm_amd, or run on a machine with hardware virtualization)" >&2
  exit 126
fi
scripts/setup.sh >&2
mkdir -p bin
# Stripped (-s -w: no symbol table or DWARF; panics still name functions and
# lines): corral exec runs a guest agent in each guest, paged in over 9p on
# a cold boot and copied whole out of an initrd for a warm one or another
# root. It takes bin/corral-agent (3.2 MB) when that was built from the
# same commit as bin/corral, else corral itself (10.7 MB instead of 15.5
# unstripped; bench/results/2026-12-07-exec-*).
CGO_ENABLED=0 go build -ldflags="-s -w" -o bin/corral ./cmd/corral
CGO_ENABLED=0 go build -ldflags="-s -w" -o bin/corral-agent ./cmd/corral-agent

if [ "${1:-}" = "--guest" ]; then
  go run ./tests/guests/cmd/guestbuild -o bin "${2:-hello}" >/dev/null
  exec bin/corral run --kernel "bin/${2:-hello}.elf"
fi
if [ $# -gt 0 ]; then
  exec bin/corral run "$@"
fi

# Which test kernel and command line suit this host: the rule of
# tests/linux/kernel (a nested KVM such as kvm_pvm needs the patched kernel
# and extra command line, see docs/nested-kvm.md; hardware KVM the plain one).
go build -o bin/choosekernel ./tests/linux/cmd/choosekernel
echo "run: choosing the test kernel; building it if it is not cached" >&2
choice=$(bin/choosekernel -build)
eval "$choice"
echo "run: $KERNEL_KIND test kernel ($KERNEL_REASON)" >&2
go run ./tests/linux/cmd/mkrootfs -o bin/initramfs.cpio -shell

net=()
if [ "$(id -u)" -eq 0 ]; then
  net=(--net auto)
else
  echo "run: not root: no network (a TAP device needs CAP_NET_ADMIN)" >&2
fi
echo "run: booting Linux; the shell comes up after about a minute under nested KVM. Ctrl-A x quits." >&2
exec bin/corral run --kernel "$KERNEL_VMLINUX" --initrd bin/initramfs.cpio --cpus 2 --memory 512M "${net[@]}" --cmdline "$KERNEL_CMDLINE"
