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
scripts/setup.sh >&2
mkdir -p bin
CGO_ENABLED=0 go build -o bin/corral ./cmd/corral

if [ "${1:-}" = "--guest" ]; then
  go run ./tests/guests/cmd/guestbuild -o bin "${2:-hello}" >/dev/null
  exec bin/corral run --kernel "bin/${2:-hello}.elf"
fi
if [ $# -gt 0 ]; then
  exec bin/corral run "$@"
fi

# Which test kernel suits this host (the same rule as tests/e2e): our
# development machines' /dev/kvm is nested through kvm_pvm and needs the
# patched kernel and extra command line of tests/linux; hardware KVM runs
# the plain kernel with a plain command line.
cmdline="console=ttyS0 panic=-1"
if [ -n "${CORRAL_LINUX_KERNEL:-}" ]; then kind=$CORRAL_LINUX_KERNEL
elif [ -d /sys/module/kvm_pvm ]; then kind=patched
elif [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; then kind=plain
elif grep -qwE 'vmx|svm' /proc/cpuinfo; then kind=plain
else kind=patched
fi
build_args=()
if [ "$kind" = patched ]; then
  cmdline="$cmdline noxsave mitigations=off clearcpuid=popcnt,cx16,rdtscp,rdpid,umip,smap,smep,fsgsbase,pku"
else
  build_args=(--no-patches)
fi
echo "run: $kind test kernel (see tests/linux/README.md); building it if not cached" >&2
vmlinux=$(tests/linux/build-kernel.sh "${build_args[@]}" | sed -n 's/^vmlinux=//p' | tail -n 1)
go run ./tests/linux/cmd/mkrootfs -o bin/initramfs.cpio -shell

net=()
if [ "$(id -u)" -eq 0 ]; then
  net=(--net auto)
else
  echo "run: not root: no network (a TAP device needs CAP_NET_ADMIN)" >&2
fi
echo "run: booting Linux; the shell comes up after about a minute under nested KVM. Ctrl-A x quits." >&2
exec bin/corral run --kernel "$vmlinux" --initrd bin/initramfs.cpio --cpus 2 --memory 512M "${net[@]}" --cmdline "$cmdline"
