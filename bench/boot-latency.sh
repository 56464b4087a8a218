#!/usr/bin/env bash
# boot-latency.sh: compare Corral with QEMU booting the same test guest.
#
# For each VMM row it boots tests/guests "hello" (exit=7) N times and reports
# the medians of
#   first byte  time from just before fork/exec to the first byte the guest
#               writes to COM1 ("corral-guest: ready", printed from the
#               guest's 32-bit entry code) as seen on the VMM's stdout;
#   exit        time from start until the VMM process was reaped after the
#               guest wrote to the debug-exit port;
#   peak RSS    the VMM process's ru_maxrss (wait4).
# Then it boots the "halt" guest a few times, waits until it has halted and
# samples /proc: VmRSS, the Rss of the guest-RAM mapping (the anonymous
# mapping exactly MEM bytes long) and their difference, "VMM RSS": what the
# VMM holds beyond the guest RAM the guest actually touched. Guest RAM that
# is allocated but never touched costs no RSS, so "RSS minus -m" would be
# meaningless; see bench/README.md.
#
# Rows: corral (if it can be found or built), qemu -M microvm, qemu -M pc
# (with qboot if /usr/share/qemu/qboot.rom exists, else SeaBIOS: slow).
#
# Usage: bench/boot-latency.sh [-n RUNS] [-m MEM] [-v]
# Environment:
#   CORRAL   path of a corral binary (default: CGO_ENABLED=0 go build ./cmd/corral)
#   QEMU     qemu binary (default: qemu-system-x86_64)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init boot-latency

RUNS=10
MEM=64M
VERBOSE=0
HOLD_RUNS=3
while getopts "n:m:vh" opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	m) MEM=$OPTARG ;;
	v) VERBOSE=1 ;;
	*) usage; exit 2 ;;
	esac
done
posint "$RUNS" || { note "boot-latency: -n wants a positive number"; exit 2; }

need_kvm
go_tool bench/firstbyte
build_guests hello halt
HELLO=$WORK/hello.elf
HALT=$WORK/halt.elf

# --- the rows -------------------------------------------------------------
# Each row is a name, the expected exit status for hello exit=7, and a
# function printing the command for a kernel and a command line.

find_corral
find_qemu
find_qboot
QEMU_COMMON=(-enable-kvm -cpu kvm64 -m "$MEM" -nodefaults -nographic -no-reboot
	-serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1)
PC_NAME="qemu-pc(seabios)"
[ ${#QEMU_BIOS[@]} -eq 0 ] || PC_NAME="qemu-pc(qboot)"

# cmd_ROW KERNEL CMDLINE: sets CMD to the command line of that row.
cmd_corral() {
	CMD=("$CORRAL_BIN" run --kernel "$1" --memory "$MEM")
	[ -z "$2" ] || CMD+=(--cmdline "$2")
}
cmd_microvm() {
	CMD=("$QEMU" -M microvm "${QEMU_COMMON[@]}" -kernel "$1")
	[ -z "$2" ] || CMD+=(-append "$2")
}
cmd_pc() {
	CMD=("$QEMU" -M pc "${QEMU_COMMON[@]}" "${QEMU_BIOS[@]}" -kernel "$1")
	[ -z "$2" ] || CMD+=(-append "$2")
}

ROWS=()
[ -n "$CORRAL_BIN" ] && ROWS+=("corral:7:cmd_corral")
[ "$HAVE_QEMU" = 1 ] && ROWS+=("qemu-microvm:15:cmd_microvm" "$PC_NAME:15:cmd_pc")
[ ${#ROWS[@]} -gt 0 ] || { note "boot-latency: nothing to run"; exit 1; }

# --- measure --------------------------------------------------------------
declare -A FB EX RSS VMRSS GRAM VMM FAILS FBSPAN EXSPAN
for row in "${ROWS[@]}"; do
	IFS=: read -r name want fn <<<"$row"
	: >"$WORK/$name.runs"
	fails=0
	for i in $(seq "$RUNS"); do
		"$fn" "$HELLO" "exit=7"
		if [ "$i" = 1 ]; then note "boot-latency: $name: ${CMD[*]}"; fi
		line=$("$WORK/firstbyte" -console "$WORK/$name.console" -- "${CMD[@]}" 2>>"$WORK/$name.stderr") || line="failed"
		st=$(field status "$line")
		if [ "$st" != "$want" ]; then
			fails=$((fails + 1))
			note "boot-latency: $name run $i: status $st, want $want (console: $(tr '\n' '|' <"$WORK/$name.console" | cut -c1-200))"
			continue
		fi
		if [ "$VERBOSE" = 1 ]; then note "$name run $i: $line"; fi
		echo "$line" >>"$WORK/$name.runs"
	done
	FAILS[$name]=$fails
	FB[$name]=$(fieldcol first_byte_ms "$WORK/$name.runs" | median)
	FBSPAN[$name]=$(fieldcol first_byte_ms "$WORK/$name.runs" | span 0)
	EXSPAN[$name]=$(fieldcol exit_ms "$WORK/$name.runs" | span 0)
	EX[$name]=$(fieldcol exit_ms "$WORK/$name.runs" | median)
	RSS[$name]=$(fieldcol maxrss_kib "$WORK/$name.runs" | median)

	: >"$WORK/$name.hold"
	for i in $(seq "$HOLD_RUNS"); do
		"$fn" "$HALT" ""
		line=$("$WORK/firstbyte" -hold "corral-guest: halted" -ram "$MEM" -- "${CMD[@]}" 2>>"$WORK/$name.stderr") || line="failed"
		if [ "$VERBOSE" = 1 ]; then note "$name halt run $i: $line"; fi
		if [ "$(field status "$line")" = killed ]; then echo "$line" >>"$WORK/$name.hold"; fi
	done
	VMRSS[$name]=$(fieldcol vmrss_kib "$WORK/$name.hold" | median)
	GRAM[$name]=$(fieldcol guest_ram_kib "$WORK/$name.hold" | median)
	VMM[$name]=$(fieldcol vmm_rss_kib "$WORK/$name.hold" | median)
done

# --- report ---------------------------------------------------------------
echo "boot-latency: guest hello (exit=7), $RUNS runs per row, -m $MEM, medians (min-max); $(nproc) host CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %16s %16s %9s %6s | %9s %9s %9s\n' row "first-byte" exit "peak-RSS" fails "halt-RSS" "guest-RAM" "VMM-RSS"
printf '%-16s %16s %16s %9s %6s | %9s %9s %9s\n' "" ms ms MiB "" MiB MiB MiB
for row in "${ROWS[@]}"; do
	IFS=: read -r name _ _ <<<"$row"
	printf '%-16s %16s %16s %9s %6s | %9s %9s %9s\n' "$name" "${FB[$name]} (${FBSPAN[$name]})" "${EX[$name]} (${EXSPAN[$name]})" \
		"$(div "${RSS[$name]}" 1024)" "${FAILS[$name]}/$RUNS" "$(div "${VMRSS[$name]}" 1024)" \
		"$(div "${GRAM[$name]}" 1024)" "$(div "${VMM[$name]}" 1024)"
done
if [ -n "$CORRAL_BIN" ] && [ -n "${FB[qemu-microvm]:-}" ]; then
	echo
	echo "corral / qemu-microvm:"
	echo "  first byte  $(ratio "${FB[corral]}" "${FB[qemu-microvm]}")"
	echo "  exit        $(ratio "${EX[corral]}" "${EX[qemu-microvm]}")"
	echo "  peak RSS    $(ratio "${RSS[corral]}" "${RSS[qemu-microvm]}")"
	echo "  VMM RSS     $(ratio "${VMM[corral]}" "${VMM[qemu-microvm]}")"
fi
