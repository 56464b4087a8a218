#!/usr/bin/env bash
# linux-boot.sh: compare Corral with QEMU booting the same Linux.
#
# Boots the test kernel of tests/linux (PVH vmlinux) with the test initramfs
# (busybox /init, script "exit 7", ended through the debug-exit port) RUNS
# times under each VMM, alternating, and reports the medians (min-max) of
#   Run /init   time from just before fork/exec to the kernel's
#               "Run /init as init process" console line
#   first byte  time to the first console byte (the kernel's first printk)
#   exit        time until the VMM process was reaped after /init wrote
#               the status to port 0xf4
#   peak RSS    the VMM process's ru_maxrss (wait4)
# and the ratios Corral / QEMU. Rows:
#   corral        corral run --kernel vmlinux --initrd initramfs --cpus C --memory M --cmdline ...
#   qemu-microvm  qemu-system-x86_64 -enable-kvm -M microvm -cpu CPU -smp C -m M -nodefaults
#                 -nographic -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1
#                 -kernel vmlinux -initrd initramfs -append ...
# Same kernel, initramfs and command line. The kernel and command line
# follow tests/e2e's rule (ChooseKernel): where kvm_pvm is loaded (nested
# KVM) the patched kernel, kernel.CmdlineNested and QEMU -cpu
# qemu64,vendor=GenuineIntel; else the plain kernel, kernel.CmdlinePlain and
# -cpu host. CORRAL_LINUX_KERNEL=plain|patched overrides.
#
# Usage: bench/linux-boot.sh [-n RUNS] [-c CPUS] [-m MEM] [-v]
# Environment:
#   CORRAL   path of a corral binary (default: CGO_ENABLED=0 go build ./cmd/corral)
#   QEMU     qemu binary (default: qemu-system-x86_64)
#   VMLINUX  a vmlinux to boot instead of the cached test kernel (the kernel
#            choice rule still picks the command line)
set -euo pipefail

RUNS=3
CPUS=1
MEM=256M
VERBOSE=0
while getopts "n:c:m:vh" opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	c) CPUS=$OPTARG ;;
	m) MEM=$OPTARG ;;
	v) VERBOSE=1 ;;
	*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
	esac
done
case $RUNS in '' | *[!0-9]* | 0) echo "linux-boot: -n wants a positive number" >&2; exit 2 ;; esac
case $CPUS in '' | *[!0-9]* | 0) echo "linux-boot: -c wants a positive number" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/linux-boot.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STATUS=7          # what /init writes to port 0xf4
TIMEOUT=5m        # per boot; a nested-KVM boot takes about a minute
RUNINIT="Run /init"

note() { printf '%s\n' "$*" >&2; }
die() { note "linux-boot: $*"; exit 1; }

cd "$ROOT"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not usable; nothing to measure"
command -v "$QEMU" >/dev/null || die "$QEMU not found (apt-get install -y qemu-system-x86)"

# --- kernel and command line (tests/e2e ChooseKernel) ----------------------
case ${CORRAL_LINUX_KERNEL:-} in
plain) PATCHED=0 WHY="CORRAL_LINUX_KERNEL=plain" ;;
patched) PATCHED=1 WHY="CORRAL_LINUX_KERNEL=patched" ;;
'')
	if [ -e /sys/module/kvm_pvm ]; then
		PATCHED=1 WHY="kvm_pvm is loaded: nested KVM"
	elif [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ]; then
		PATCHED=0 WHY="kvm_intel/kvm_amd is loaded: hardware KVM"
	elif grep -qwE 'vmx|svm' /proc/cpuinfo; then
		PATCHED=0 WHY="cpuinfo shows vmx/svm: hardware KVM"
	else
		PATCHED=1 WHY="cpuinfo shows neither vmx nor svm: nested KVM"
	fi
	;;
*) die "CORRAL_LINUX_KERNEL=$CORRAL_LINUX_KERNEL: want plain or patched" ;;
esac
LOOKUP=(tests/linux/build-kernel.sh --lookup)
[ "$PATCHED" = 1 ] || LOOKUP+=(--no-patches)
VMLINUX=${VMLINUX:-}
[ -n "$VMLINUX" ] || VMLINUX=$(bash "${LOOKUP[@]}" 2>"$WORK/lookup.err" | sed -n 's/^vmlinux=//p') || true
if [ -z "$VMLINUX" ] || [ ! -r "$VMLINUX" ]; then
	cat "$WORK/lookup.err" >&2
	die "test kernel not built: run tests/linux/build-kernel.sh$([ "$PATCHED" = 1 ] || echo ' --no-patches')"
fi
# The command lines are Go constants in tests/linux/kernel/kernel.go.
KGO=tests/linux/kernel/kernel.go
PLAIN=$(sed -n 's/^[[:space:]]*CmdlinePlain = "\(.*\)"$/\1/p' "$KGO")
NESTED_EXTRA=$(sed -n 's/^[[:space:]]*CmdlineNested = CmdlinePlain + "\(.*\)"$/\1/p' "$KGO")
[ -n "$PLAIN" ] && [ -n "$NESTED_EXTRA" ] || die "cannot read CmdlinePlain/CmdlineNested from $KGO"
if [ "$PATCHED" = 1 ]; then
	CMDLINE="$PLAIN$NESTED_EXTRA"
	QEMU_CPU=qemu64,vendor=GenuineIntel
else
	CMDLINE="$PLAIN"
	QEMU_CPU=host
fi

# --- tools and the initramfs ------------------------------------------------
go build -o "$WORK/firstbyte" ./bench/firstbyte
go build -o "$WORK/mkrootfs" ./tests/linux/cmd/mkrootfs
printf 'exit %d\n' "$STATUS" >"$WORK/script.sh"
"$WORK/mkrootfs" -o "$WORK/initramfs.cpio" -exit port -no-dhcp -script "$WORK/script.sh"
INITRD=$WORK/initramfs.cpio
CORRAL_BIN=${CORRAL:-}
if [ -z "$CORRAL_BIN" ]; then
	CGO_ENABLED=0 go build -o "$WORK/corral" ./cmd/corral || die "go build ./cmd/corral failed"
	CORRAL_BIN=$WORK/corral
fi
[ -x "$CORRAL_BIN" ] || die "CORRAL=$CORRAL_BIN is not executable"

# cmd_ROW: sets CMD to the row's command.
cmd_corral() {
	CMD=("$CORRAL_BIN" run --kernel "$VMLINUX" --initrd "$INITRD" --cpus "$CPUS" --memory "$MEM" --cmdline "$CMDLINE")
}
cmd_qemu() {
	CMD=("$QEMU" -enable-kvm -M microvm -cpu "$QEMU_CPU" -smp "$CPUS" -m "$MEM" -nodefaults -nographic
		-no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1
		-kernel "$VMLINUX" -initrd "$INITRD" -append "$CMDLINE")
}
# name:expected exit status:function (QEMU's isa-debug-exit exits with 2v+1)
ROWS=("corral:$STATUS:cmd_corral" "qemu-microvm:$((2 * STATUS + 1)):cmd_qemu")

# --- helpers --------------------------------------------------------------
field() { # field KEY LINE -> value
	local kv
	for kv in $2; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }; done
	echo na
}
median() { # numbers on stdin ("na" ignored) -> median or na
	grep -v '^na$' | sort -n | awk '{a[NR]=$1} END {
		if (NR == 0) { print "na"; exit }
		if (NR % 2) printf "%.1f\n", a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2 }'
}
span() { # numbers on stdin -> "min-max" or na
	grep -v '^na$' | sort -n | awk 'NR == 1 {lo=$1} {hi=$1} END { if (NR == 0) print "na"; else printf "%.1f-%.1f\n", lo, hi }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "na" || b == "na" || b == 0) print "na"; else printf "%.2f\n", a/b }'; }
secs() { awk -v m="$1" 'BEGIN { if (m == "na") print "na"; else printf "%.1f\n", m/1000 }'; }
kib2mib() { awk -v k="$1" 'BEGIN { if (k == "na") print "na"; else printf "%.1f\n", k/1024 }'; }

# --- measure (rows alternate, so load changes hit both) --------------------
note "linux-boot: kernel $VMLINUX ($WHY), $CPUS CPU(s), -m $MEM, $RUNS runs per VMM"
note "linux-boot: command line: $CMDLINE"
declare -A FAILS
for row in "${ROWS[@]}"; do
	IFS=: read -r name _ _ <<<"$row"
	: >"$WORK/$name.runs"
	FAILS[$name]=0
done
for i in $(seq "$RUNS"); do
	for row in "${ROWS[@]}"; do
		IFS=: read -r name want fn <<<"$row"
		"$fn"
		[ "$i" = 1 ] && note "linux-boot: $name: ${CMD[*]}"
		line=$("$WORK/firstbyte" -timeout "$TIMEOUT" -line "$RUNINIT" -console "$WORK/$name.console" -- "${CMD[@]}" \
			2>>"$WORK/$name.stderr") || line="failed"
		st=$(field status "$line")
		if [ "$st" != "$want" ] || [ "$(field line_ms "$line")" = na ]; then
			FAILS[$name]=$((FAILS[$name] + 1))
			note "linux-boot: $name run $i: status $st (want $want), line_ms $(field line_ms "$line"); console tail:"
			tail -n 5 "$WORK/$name.console" | sed 's/^/  /' >&2
			continue
		fi
		[ "$VERBOSE" = 1 ] && note "$name run $i: $line"
		echo "$line" >>"$WORK/$name.runs"
	done
done

# --- report ---------------------------------------------------------------
declare -A RI RISPAN FB EX EXSPAN RSS RSSSPAN
for row in "${ROWS[@]}"; do
	IFS=: read -r name _ _ <<<"$row"
	col() { while read -r l; do field "$1" "$l"; done <"$WORK/$name.runs"; }
	RI[$name]=$(col line_ms | median)
	RISPAN[$name]=$(col line_ms | awk '{print $1/1000}' | span)
	FB[$name]=$(col first_byte_ms | median)
	EX[$name]=$(col exit_ms | median)
	EXSPAN[$name]=$(col exit_ms | awk '{print $1/1000}' | span)
	RSS[$name]=$(col maxrss_kib | median)
	RSSSPAN[$name]=$(col maxrss_kib | awk '{print $1/1024}' | span)
done
echo "linux-boot: PVH vmlinux + initramfs to '$RUNINIT', $RUNS runs per VMM, $CPUS CPU(s), -m $MEM, medians (min-max)"
echo "  kernel $(basename "$(dirname "$VMLINUX")") ($WHY); $(nproc) host CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %22s %12s %22s %22s %6s\n' row "Run /init" "first byte" exit "peak RSS" fails
printf '%-14s %22s %12s %22s %22s %6s\n' "" s s s MiB ""
for row in "${ROWS[@]}"; do
	IFS=: read -r name _ _ <<<"$row"
	printf '%-14s %22s %12s %22s %22s %6s\n' "$name" "$(secs "${RI[$name]}") (${RISPAN[$name]})" "$(secs "${FB[$name]}")" \
		"$(secs "${EX[$name]}") (${EXSPAN[$name]})" "$(kib2mib "${RSS[$name]}") (${RSSSPAN[$name]})" "${FAILS[$name]}/$RUNS"
done
echo
echo "corral / qemu-microvm:"
echo "  Run /init   $(ratio "${RI[corral]}" "${RI[qemu-microvm]}")"
echo "  first byte  $(ratio "${FB[corral]}" "${FB[qemu-microvm]}")"
echo "  exit        $(ratio "${EX[corral]}" "${EX[qemu-microvm]}")"
echo "  peak RSS    $(ratio "${RSS[corral]}" "${RSS[qemu-microvm]}")"
