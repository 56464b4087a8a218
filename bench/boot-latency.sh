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

RUNS=10
MEM=64M
VERBOSE=0
HOLD_RUNS=3
while getopts "n:m:vh" opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	m) MEM=$OPTARG ;;
	v) VERBOSE=1 ;;
	*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
	esac
done
case $RUNS in '' | *[!0-9]* | 0) echo "boot-latency: -n wants a positive number" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QEMU=${QEMU:-qemu-system-x86_64}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/boot-latency.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

note() { printf '%s\n' "$*" >&2; }

cd "$ROOT"
go build -o "$WORK/firstbyte" ./bench/firstbyte
go build -o "$WORK/guestbuild" ./tests/guests/cmd/guestbuild
"$WORK/guestbuild" -o "$WORK" hello halt >/dev/null
HELLO=$WORK/hello.elf
HALT=$WORK/halt.elf

if [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
	note "boot-latency: /dev/kvm is not usable; nothing to measure"
	exit 1
fi

# --- the rows -------------------------------------------------------------
# Each row is a name, the expected exit status for hello exit=7, and a
# function printing the command for a kernel and a command line.

CORRAL_BIN=${CORRAL:-}
if [ -z "$CORRAL_BIN" ]; then
	if [ -d "$ROOT/cmd/corral" ] && CGO_ENABLED=0 go build -o "$WORK/corral" ./cmd/corral 2>"$WORK/corral-build.log"; then
		CORRAL_BIN=$WORK/corral
	else
		note "boot-latency: no corral binary (set CORRAL=path, or make 'go build ./cmd/corral' work):"
		[ -s "$WORK/corral-build.log" ] && sed 's/^/  /' "$WORK/corral-build.log" | head -20 >&2
		note "boot-latency: measuring the QEMU rows only"
	fi
elif [ ! -x "$CORRAL_BIN" ]; then
	note "boot-latency: CORRAL=$CORRAL_BIN is not executable; measuring the QEMU rows only"
	CORRAL_BIN=
fi

QEMU_COMMON=(-enable-kvm -cpu kvm64 -m "$MEM" -nodefaults -nographic -no-reboot
	-serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1)
QBOOT=/usr/share/qemu/qboot.rom
PC_BIOS=()
PC_NAME="qemu-pc(seabios)"
if [ -f "$QBOOT" ]; then
	PC_BIOS=(-bios "$QBOOT")
	PC_NAME="qemu-pc(qboot)"
fi

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
	CMD=("$QEMU" -M pc "${QEMU_COMMON[@]}" "${PC_BIOS[@]}" -kernel "$1")
	[ -z "$2" ] || CMD+=(-append "$2")
}

ROWS=()
[ -n "$CORRAL_BIN" ] && ROWS+=("corral:7:cmd_corral")
if command -v "$QEMU" >/dev/null; then
	ROWS+=("qemu-microvm:15:cmd_microvm" "$PC_NAME:15:cmd_pc")
else
	note "boot-latency: $QEMU not found; no QEMU rows"
fi
[ ${#ROWS[@]} -gt 0 ] || { note "boot-latency: nothing to run"; exit 1; }

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
	grep -v '^na$' | sort -n | awk 'NR == 1 {lo=$1} {hi=$1} END { if (NR == 0) print "na"; else printf "%.0f-%.0f\n", lo, hi }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "na" || b == "na" || b == 0) print "na"; else printf "%.2f\n", a/b }'; }
kib2mib() { awk -v k="$1" 'BEGIN { if (k == "na") print "na"; else printf "%.1f\n", k/1024 }'; }

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
	FB[$name]=$(while read -r l; do field first_byte_ms "$l"; done <"$WORK/$name.runs" | median)
	FBSPAN[$name]=$(while read -r l; do field first_byte_ms "$l"; done <"$WORK/$name.runs" | span)
	EXSPAN[$name]=$(while read -r l; do field exit_ms "$l"; done <"$WORK/$name.runs" | span)
	EX[$name]=$(while read -r l; do field exit_ms "$l"; done <"$WORK/$name.runs" | median)
	RSS[$name]=$(while read -r l; do field maxrss_kib "$l"; done <"$WORK/$name.runs" | median)

	: >"$WORK/$name.hold"
	for i in $(seq "$HOLD_RUNS"); do
		"$fn" "$HALT" ""
		line=$("$WORK/firstbyte" -hold "corral-guest: halted" -ram "$MEM" -- "${CMD[@]}" 2>>"$WORK/$name.stderr") || line="failed"
		if [ "$VERBOSE" = 1 ]; then note "$name halt run $i: $line"; fi
		if [ "$(field status "$line")" = killed ]; then echo "$line" >>"$WORK/$name.hold"; fi
	done
	VMRSS[$name]=$(while read -r l; do field vmrss_kib "$l"; done <"$WORK/$name.hold" | median)
	GRAM[$name]=$(while read -r l; do field guest_ram_kib "$l"; done <"$WORK/$name.hold" | median)
	VMM[$name]=$(while read -r l; do field vmm_rss_kib "$l"; done <"$WORK/$name.hold" | median)
done

# --- report ---------------------------------------------------------------
echo "boot-latency: guest hello (exit=7), $RUNS runs per row, -m $MEM, medians (min-max); $(nproc) host CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-16s %16s %16s %9s %6s | %9s %9s %9s\n' row "first-byte" exit "peak-RSS" fails "halt-RSS" "guest-RAM" "VMM-RSS"
printf '%-16s %16s %16s %9s %6s | %9s %9s %9s\n' "" ms ms MiB "" MiB MiB MiB
for row in "${ROWS[@]}"; do
	IFS=: read -r name _ _ <<<"$row"
	printf '%-16s %16s %16s %9s %6s | %9s %9s %9s\n' "$name" "${FB[$name]} (${FBSPAN[$name]})" "${EX[$name]} (${EXSPAN[$name]})" \
		"$(kib2mib "${RSS[$name]}")" "${FAILS[$name]}/$RUNS" "$(kib2mib "${VMRSS[$name]}")" \
		"$(kib2mib "${GRAM[$name]}")" "$(kib2mib "${VMM[$name]}")"
done
if [ -n "$CORRAL_BIN" ] && [ -n "${FB[qemu-microvm]:-}" ]; then
	echo
	echo "corral / qemu-microvm:"
	echo "  first byte  $(ratio "${FB[corral]}" "${FB[qemu-microvm]}")"
	echo "  exit        $(ratio "${EX[corral]}" "${EX[qemu-microvm]}")"
	echo "  peak RSS    $(ratio "${RSS[corral]}" "${RSS[qemu-microvm]}")"
	echo "  VMM RSS     $(ratio "${VMM[corral]}" "${VMM[qemu-microvm]}")"
fi
