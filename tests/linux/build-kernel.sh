#!/usr/bin/env bash
# Builds (or finds in the cache) the small Linux 6.1 test kernel for Corral's
# end-to-end tests, from Debian's linux-source-6.1 package.
#
# Usage: tests/linux/build-kernel.sh [--no-patches] [--lookup] [--print-key] [--help]
#
#   (default)      the test kernel for Corral's nested-KVM development machines:
#                  tinyconfig + tests/linux/kernel.config + tests/linux/patches/*.patch
#   --no-patches   the plain kernel (same config, no patches), for hardware KVM;
#                  it has its own cache key
#   --lookup       only look in the cache: print the paths and exit 0 if the
#                  kernel is built, else exit 3; never installs or builds
#   --print-key    print the cache key and exit
#
# Environment:
#   CORRAL_CACHE        cache root (default $HOME/.cache/corral)
#   CORRAL_KERNEL_WORK  where the source tree is unpacked and built
#                       (default $CORRAL_CACHE/kernel-work); never inside the checkout
#   CORRAL_KERNEL_JOBS  make -j value (default: nproc)
#
# Output: the cache directory $CORRAL_CACHE/kernel/<key>/ holds bzImage,
# vmlinux (debug info stripped, PVH entry note kept), config, info and paths.
# The last two lines on stdout are
#   bzImage=<path>
#   vmlinux=<path>
# and the same two lines are in <dir>/paths.
set -euo pipefail

EXIT_NOT_BUILT=3

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="$here/$(basename "${BASH_SOURCE[0]}")"
fragment="$here/kernel.config"
patchdir="$here/patches"
cache_root="${CORRAL_CACHE:-$HOME/.cache/corral}"
work_root="${CORRAL_KERNEL_WORK:-$cache_root/kernel-work}"
jobs="${CORRAL_KERNEL_JOBS:-$(nproc)}"
src_pkg=linux-source-6.1
src_tarball=/usr/src/linux-source-6.1.tar.xz
build_pkgs=(linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev lz4 cpio xz-utils binutils)

patched=1
mode=build

log() { echo "build-kernel: $*" >&2; }
die() { echo "build-kernel: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--no-patches) patched=0 ;;
	--lookup) mode=lookup ;;
	--print-key) mode=key ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$script" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown option: $1 (see --help)" ;;
	esac
	shift
done

case "$work_root" in
"$(cd "$here/../.." && pwd)"/*) die "CORRAL_KERNEL_WORK=$work_root is inside the checkout; pick a directory outside it" ;;
esac

# pkg_version prints the installed version of a Debian package, or nothing
# (dpkg-query fails for a package it has never heard of: under pipefail that
# would end the script without a word).
pkg_version() {
	{ dpkg-query -W -f='${Status} ${Version}\n' "$1" 2>/dev/null || true; } |
		awk '$1=="install" && $3=="installed" {print $4}'
}

# ensure_packages installs whichever of the build packages are missing.
ensure_packages() {
	local missing=() p
	for p in "${build_pkgs[@]}"; do
		[ -n "$(pkg_version "$p")" ] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})"
	log "installing: ${missing[*]}"
	if ! apt-cache show "$src_pkg" >/dev/null 2>&1; then
		log "apt lists lack $src_pkg; running apt-get update"
		apt-get update -qq
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
}

# compute_key prints the cache key: variant plus a hash of the linux-source
# version, the config fragment, the patches (if used) and this script.
compute_key() {
	local srcver="$1" variant=plain
	[ "$patched" -eq 1 ] && variant=patched
	local h
	h="$(
		{
			echo "linux-source $srcver"
			echo "variant $variant"
			echo "== kernel.config"
			cat "$fragment"
			if [ "$patched" -eq 1 ]; then
				for p in "$patchdir"/*.patch; do
					echo "== patch $(basename "$p")"
					cat "$p"
				done
			fi
			echo "== build-kernel.sh"
			cat "$script"
		} | sha256sum | cut -c1-16
	)"
	echo "$variant-$h"
}

print_paths() {
	local dir="$1"
	echo "bzImage=$dir/bzImage"
	echo "vmlinux=$dir/vmlinux"
}

# cache_hit succeeds if dir holds a complete build.
cache_hit() {
	[ -s "$1/bzImage" ] && [ -s "$1/vmlinux" ] && [ -s "$1/paths" ]
}

# check_fragment fails unless every option of the fragment is in .config as written.
check_fragment() {
	local config="$1" bad=0 line name
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			if ! grep -qxF -- "$line" "$config"; then
				name="${line%%=*}"
				log "config option not applied: want '$line', have '$(grep -E "^(# )?$name[= ]" "$config" || echo "$name absent")'"
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			name="${line#\# }"
			name="${name%% *}"
			if grep -qE "^$name=" "$config"; then
				log "config option not applied: want '$line', have '$(grep -E "^$name=" "$config")'"
				bad=1
			fi
			;;
		esac
	done <"$fragment"
	[ "$bad" -eq 0 ] || die "config fragment $fragment was not fully applied (unmet dependencies?); see messages above"
}

# check_pvh_note fails unless the ELF has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18).
check_pvh_note() {
	readelf -n "$1" | grep -A1 -E '^ *Xen ' | grep -qE '0x00000012|PHYS32_ENTRY' ||
		die "$1 has no PVH entry note (Xen note type 0x12); is CONFIG_PVH set?"
}

srcver="$(pkg_version "$src_pkg")"
if [ "$mode" = lookup ] || [ "$mode" = key ]; then
	[ -n "$srcver" ] || {
		log "$src_pkg is not installed, so no kernel is built (run $script)"
		exit $EXIT_NOT_BUILT
	}
fi
if [ "$mode" = build ]; then
	ensure_packages
	srcver="$(pkg_version "$src_pkg")"
fi
key="$(compute_key "$srcver")"
if [ "$mode" = key ]; then
	echo "$key"
	exit 0
fi
outdir="$cache_root/kernel/$key"

if cache_hit "$outdir"; then
	log "cached: $outdir ($(grep -h '^build_seconds=' "$outdir/info" 2>/dev/null || true))"
	print_paths "$outdir"
	exit 0
fi
if [ "$mode" = lookup ]; then
	hint="$script"
	[ "$patched" -eq 1 ] || hint="$hint --no-patches"
	log "not built: $outdir (run $hint)"
	exit $EXIT_NOT_BUILT
fi

[ -f "$src_tarball" ] || die "$src_tarball missing although $src_pkg $srcver is installed"

work="$work_root/$key"
tree="$work/linux-source-6.1"
stamp="$work/.prepared"
buildlog="$work/build.log"
mkdir -p "$work_root"

# One build per key at a time: a second run waits, then finds the cache.
command -v flock >/dev/null || die "flock (util-linux) is needed"
exec 9>"$work_root/$key.lock"
if ! flock -n 9; then
	log "another build of $key is running; waiting for it"
	flock 9
fi
if cache_hit "$outdir"; then
	log "built meanwhile by another run: $outdir"
	print_paths "$outdir"
	exit 0
fi

if [ -f "$stamp" ] && [ -d "$tree" ]; then
	log "reusing prepared tree $tree (incremental build)"
else
	log "unpacking $src_tarball ($src_pkg $srcver) into $work"
	rm -rf "$work"
	mkdir -p "$work"
	tar -C "$work" -xf "$src_tarball"
	[ -d "$tree" ] || die "tarball did not contain linux-source-6.1/"

	if [ "$patched" -eq 1 ]; then
		shopt -s nullglob
		patches=("$patchdir"/*.patch)
		shopt -u nullglob
		[ ${#patches[@]} -gt 0 ] || die "no patches in $patchdir"
		for p in "${patches[@]}"; do
			log "applying $(basename "$p")"
			patch -d "$tree" -p1 --forward --batch --quiet <"$p" || die "patch $p does not apply to $src_pkg $srcver"
		done
	else
		log "--no-patches: building the plain kernel"
	fi

	log "configuring: tinyconfig + $(basename "$fragment") + olddefconfig"
	(
		cd "$tree"
		make -s tinyconfig >"$work/config.log" 2>&1
		scripts/kconfig/merge_config.sh -m .config "$fragment" >>"$work/config.log" 2>&1
		make -s olddefconfig >>"$work/config.log" 2>&1
	) || {
		tail -n 30 "$work/config.log" >&2
		die "kernel configuration failed (log: $work/config.log)"
	}
	check_fragment "$tree/.config"
	touch "$stamp"
fi

export KBUILD_BUILD_USER=corral KBUILD_BUILD_HOST=corral KBUILD_BUILD_TIMESTAMP="corral test kernel"
log "building bzImage vmlinux with make -j$jobs (log: $buildlog); this takes minutes"
start=$SECONDS
if ! make -C "$tree" -j"$jobs" bzImage vmlinux >"$buildlog" 2>&1; then
	grep -E 'error|Error' "$buildlog" | head -n 20 >&2 || true
	tail -n 20 "$buildlog" >&2
	# The next run starts from a fresh tree rather than a possibly broken one.
	rm -f "$stamp"
	die "kernel build failed (log: $buildlog)"
fi
secs=$((SECONDS - start))
log "build took ${secs}s"
check_fragment "$tree/.config"

tmp="$outdir.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
cp "$tree/arch/x86/boot/bzImage" "$tmp/bzImage"
objcopy --strip-debug "$tree/vmlinux" "$tmp/vmlinux"
check_pvh_note "$tmp/vmlinux"
cp "$tree/.config" "$tmp/config"
{
	echo "key=$key"
	echo "linux_source=$srcver"
	echo "kernel_release=$(make -s -C "$tree" kernelrelease 2>/dev/null)"
	echo "patched=$patched"
	echo "jobs=$jobs"
	echo "nproc=$(nproc)"
	echo "build_seconds=$secs"
} >"$tmp/info"
print_paths "$outdir" >"$tmp/paths"
rm -rf "$outdir"
mv "$tmp" "$outdir"
log "cached in $outdir; bzImage $(stat -c %s "$outdir/bzImage") bytes, vmlinux $(stat -c %s "$outdir/vmlinux") bytes"
log "work tree kept at $tree (delete it to save space; the cache does not need it)"
print_paths "$outdir"
