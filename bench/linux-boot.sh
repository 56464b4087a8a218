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
# Same kernel, initramfs and command line. The kernel, command line and
# QEMU -cpu follow the rule of tests/linux/kernel (Choose), which
# tests/linux/cmd/choosekernel prints: on a nested KVM (kvm_pvm) the patched
# kernel and its command line with -cpu qemu64,vendor=GenuineIntel, on
# hardware KVM the plain ones with -cpu host. CORRAL_LINUX_KERNEL=plain|patched
# overrides.
#
# Usage: bench/linux-boot.sh [-n RUNS] [-c CPUS] [-m MEM] [-v]
# Environment:
#   CORRAL   path of a corral binary (default: CGO_ENABLED=0 go build ./cmd/corral)
#   QEMU     qemu binary (default: qemu-system-x86_64)
#   VMLINUX  a vmlinux to boot instead of the cached test kernel (the kernel
#            choice rule still picks the command line)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init linux-boot

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
	*) usage; exit 2 ;;
	esac
done
posint "$RUNS" || { note "linux-boot: -n wants a positive number"; exit 2; }
posint "$CPUS" || { note "linux-boot: -c wants a positive number"; exit 2; }

STATUS=7          # what /init writes to port 0xf4
TIMEOUT=5m        # per boot; a nested-KVM boot takes about a minute
RUNINIT="Run /init"

need_kvm
find_qemu
[ "$HAVE_QEMU" = 1 ] || exit 1

# --- kernel and command line (tests/linux/kernel.Choose) --------------------
go_tool tests/linux/cmd/choosekernel
RULE=()
[ -z "${VMLINUX:-}" ] || RULE=(-rule)
CHOICE=$("$WORK/choosekernel" "${RULE[@]}") || die "no test kernel (see above)"
eval "$CHOICE"
VMLINUX=${VMLINUX:-$KERNEL_VMLINUX}
[ -r "$VMLINUX" ] || die "VMLINUX=$VMLINUX is not readable"
WHY=$KERNEL_REASON
CMDLINE=$KERNEL_CMDLINE
QEMU_CPU=$KERNEL_QEMU_CPU

# --- tools and the initramfs ------------------------------------------------
go_tool bench/firstbyte
go_tool tests/linux/cmd/mkrootfs
printf 'exit %d\n' "$STATUS" >"$WORK/script.sh"
"$WORK/mkrootfs" -o "$WORK/initramfs.cpio" -exit port -no-dhcp -script "$WORK/script.sh"
INITRD=$WORK/initramfs.cpio
find_corral
[ -n "$CORRAL_BIN" ] || exit 1

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
	runs=$WORK/$name.runs
	RI[$name]=$(fieldcol line_ms "$runs" | median)
	RISPAN[$name]=$(fieldcol line_ms "$runs" | scale 0.001 | span)
	FB[$name]=$(fieldcol first_byte_ms "$runs" | median)
	EX[$name]=$(fieldcol exit_ms "$runs" | median)
	EXSPAN[$name]=$(fieldcol exit_ms "$runs" | scale 0.001 | span)
	RSS[$name]=$(fieldcol maxrss_kib "$runs" | median)
	RSSSPAN[$name]=$(fieldcol maxrss_kib "$runs" | scale "$(div 1 1024 12)" | span)
done
echo "linux-boot: PVH vmlinux + initramfs to '$RUNINIT', $RUNS runs per VMM, $CPUS CPU(s), -m $MEM, medians (min-max)"
echo "  kernel $(basename "$(dirname "$VMLINUX")") ($WHY); $(nproc) host CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-14s %22s %12s %22s %22s %6s\n' row "Run /init" "first byte" exit "peak RSS" fails
printf '%-14s %22s %12s %22s %22s %6s\n' "" s s s MiB ""
for row in "${ROWS[@]}"; do
	IFS=: read -r name _ _ <<<"$row"
	printf '%-14s %22s %12s %22s %22s %6s\n' "$name" "$(div "${RI[$name]}" 1000) (${RISPAN[$name]})" "$(div "${FB[$name]}" 1000)" \
		"$(div "${EX[$name]}" 1000) (${EXSPAN[$name]})" "$(div "${RSS[$name]}" 1024) (${RSSSPAN[$name]})" "${FAILS[$name]}/$RUNS"
done
echo
echo "corral / qemu-microvm:"
echo "  Run /init   $(ratio "${RI[corral]}" "${RI[qemu-microvm]}")"
echo "  first byte  $(ratio "${FB[corral]}" "${FB[qemu-microvm]}")"
echo "  exit        $(ratio "${EX[corral]}" "${EX[qemu-microvm]}")"
echo "  peak RSS    $(ratio "${RSS[corral]}" "${RSS[qemu-microvm]}")"
