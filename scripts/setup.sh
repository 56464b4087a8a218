#!/usr/bin/env bash
# Installs what building, running and testing Corral needs on a fresh
# Debian 12 machine (as root, or with sudo), and downloads the Go modules.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  gcc libc6-dev linux-libc-dev   # test guests and the KVM ABI check
  qemu-system-x86                # side-by-side runs and benchmarks
  busybox-static e2fsprogs cpio  # Linux guest root file systems
  iproute2                       # network namespaces in tests
  acpica-tools                   # iasl: checks the ACPI tables
  containerd                     # the containerd shim's tests (shim/e2e); no daemon is started
  # the test kernel (tests/linux/build-kernel.sh): Debian's linux-source
  linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev lz4 xz-utils
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
go mod download
# The containerd shim is a module of its own (shim/go.mod).
if [ -f shim/go.mod ]; then (cd shim && go mod download); fi
