#!/bin/sh
# fetch-debian-kernel.sh: put Debian's linux-image-amd64 bzImage at
# ${CORRAL_CACHE:-$HOME/.cache/corral}/debian-kernel/vmlinuz for the boot
# package's real-kernel test (TestDebianKernel). Needs apt-get and dpkg-deb;
# nothing is written inside the repository.
set -eu

cache="${CORRAL_CACHE:-$HOME/.cache/corral}/debian-kernel"
meta="${1:-linux-image-amd64}"

# The metapackage depends on the versioned image package; resolve it.
pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/ {print $2; exit}')
if [ -z "$pkg" ]; then
	echo "fetch-debian-kernel: cannot resolve $meta to an image package (run apt-get update?)" >&2
	exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
(cd "$work" && apt-get download "$pkg")
deb=$(ls "$work"/*.deb)

# Extract only /boot/vmlinuz-*.
mkdir -p "$work/root"
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/root" --wildcards './boot/vmlinuz-*'
src=$(ls "$work"/root/boot/vmlinuz-* | head -n 1)

mkdir -p "$cache"
cp "$src" "$cache/vmlinuz.tmp"
mv "$cache/vmlinuz.tmp" "$cache/vmlinuz"
basename "$src" >"$cache/VERSION"
echo "fetch-debian-kernel: $(basename "$src") -> $cache/vmlinuz"
