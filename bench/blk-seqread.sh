#!/usr/bin/env bash
# blk-seqread.sh: sequential virtio-blk read throughput, Corral vs QEMU, with
# the same guest on the same image in the same run.
#
# The tests/guests "blk" guest (its own polled virtio 1.x PCI driver) reads
# SIZE MiB from sector 0 in REQ KiB requests, DEPTH in flight, checking that
# each request's first and last sectors carry their sector numbers (the image
# is written so), and prints the elapsed guest TSC time and MiB/s (TSC rate
# from KVM's kvmclock). Each VMM boots it RUNS times, alternating; the script
# prints the median, min and max of the guest's MiB/s per VMM, the median
# wall time of the whole VMM process, the median CPU the VMM spent per
# request beside its vCPU thread (bench/vmmcpu -io-unit: per-thread
# schedstat and the bytes the process read, sampled every 10 ms while the
# reads run), and the ratios of the medians.
#
# Rows:
#   corral  corral run --kernel blk.elf --memory 64M --disk IMG,ro
#           --cmdline 'seqread=SIZE reqkb=REQ depth=DEPTH seqcheck=1'
#   qemu    qemu-system-x86_64 -enable-kvm -cpu kvm64 -M pc -bios qboot.rom -m 64
#           -nodefaults -nographic -no-reboot -serial stdio
#           -device isa-debug-exit,iobase=0xf4,iosize=1 -kernel blk.elf -append '...'
#           -drive if=none,id=d0,file=IMG,format=raw,readonly=on
#           -device virtio-blk-pci,drive=d0,disable-legacy=on
# Both read the image through the host page cache (warmed first).
#
# Usage: bench/blk-seqread.sh [-n RUNS] [-s SIZE_MIB] [-r REQ_KIB] [-d DEPTH] [-v]
# Environment:
#   CORRAL   path of a corral binary (default: CGO_ENABLED=0 go build ./cmd/corral)
#   QEMU     qemu binary (default: qemu-system-x86_64)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init blk-seqread

RUNS=5
SIZE=64
REQ=128
DEPTH=4
VERBOSE=0
while getopts "n:s:r:d:vh" opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	s) SIZE=$OPTARG ;;
	r) REQ=$OPTARG ;;
	d) DEPTH=$OPTARG ;;
	v) VERBOSE=1 ;;
	*) usage; exit 2 ;;
	esac
done
posint "$RUNS" "$SIZE" "$REQ" "$DEPTH" || { note "blk-seqread: -n, -s, -r and -d want positive numbers"; exit 2; }

need_kvm
build_guests blk
KERNEL=$WORK/blk.elf
find_corral
find_qemu
find_qboot
go_tool bench/vmmcpu

# Image: sector s starts with s as a little-endian 64-bit number.
IMG=$WORK/seq.img
perl -e 'my $z = "\0" x 504; for my $s (0 .. $ARGV[0] * 2048 - 1) { print pack("Q<", $s), $z }' "$SIZE" >"$IMG"
cat "$IMG" >/dev/null # warm the page cache

CMDLINE="seqread=$SIZE reqkb=$REQ depth=$DEPTH seqcheck=1"

# run ROW: boots once, appends "MiBps wall_ms us_per_request" to $WORK/ROW.txt
# or reports a failure.
run() {
	local row=$1 out=$WORK/$1.out want status start end pid cpu_pid
	start=$(date +%s%N)
	set +e
	case $row in
	corral)
		"$CORRAL_BIN" run --kernel "$KERNEL" --memory 64M --disk "$IMG,ro" --cmdline "$CMDLINE" \
			</dev/null >"$out" 2>&1 &
		want=0
		;;
	qemu)
		"$QEMU" -enable-kvm -cpu kvm64 -M pc "${QEMU_BIOS[@]}" -m 64 -nodefaults -nographic -no-reboot \
			-serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1 -kernel "$KERNEL" \
			-append "$CMDLINE" -drive "if=none,id=d0,file=$IMG,format=raw,readonly=on" \
			-device virtio-blk-pci,drive=d0,disable-legacy=on </dev/null >"$out" 2>&1 &
		want=1 # isa-debug-exit: 2*0+1
		;;
	esac
	pid=$!
	"$WORK/vmmcpu" -pid "$pid" -io-unit "$((REQ * 1024))" -interval 10ms -timeout 600s >"$out.cpu" 2>&1 &
	cpu_pid=$!
	wait "$pid"
	status=$?
	wait "$cpu_pid"
	set -e
	end=$(date +%s%N)
	[ "$VERBOSE" = 1 ] && sed "s/^/  $row: /" "$out" "$out.cpu" >&2
	local rate
	rate=$(sed -n 's/^blk: seqread .* \([0-9.]*\) MiB\/s.*/\1/p' "$out" | tr -d '\r')
	if [ "$status" != "$want" ] || [ -z "$rate" ] || ! grep -q '^blk: ok' "$out"; then
		note "blk-seqread: $row run failed (status $status, want $want):"
		head -20 "$out" | sed 's/^/  /' >&2
		return 0
	fi
	local cpu
	cpu=$(sed -n 's/.* = \([0-9.]*\) us\/frame.*/\1/p' "$out.cpu")
	echo "$rate $(((end - start) / 1000000)) ${cpu:-na}" >>"$WORK/$row.txt"
}

ROWS=()
[ -n "$CORRAL_BIN" ] && ROWS+=(corral)
[ "$HAVE_QEMU" = 1 ] && ROWS+=(qemu)
[ ${#ROWS[@]} -gt 0 ] || { note "blk-seqread: no VMM to run"; exit 1; }

for ((i = 0; i < RUNS; i++)); do
	for row in "${ROWS[@]}"; do run "$row"; done
done

echo "blk seqread: $SIZE MiB, $REQ KiB requests, depth $DEPTH, $RUNS runs per VMM, load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %10s %20s %12s %10s %6s\n' row MiB/s "(min-max)" wall-ms us/req ok
declare -A MED CPU
for row in "${ROWS[@]}"; do
	f=$WORK/$row.txt
	if [ ! -s "$f" ]; then
		printf '%-8s %10s %20s %12s %10s %6s\n' "$row" na "" na na "0/$RUNS"
		continue
	fi
	MED[$row]=$(col 1 "$f" | median 2)
	CPU[$row]=$(col 3 "$f" | median 2)
	printf '%-8s %10s %20s %12s %10s %6s\n' "$row" "${MED[$row]}" "($(col 1 "$f" | span 2))" "$(col 2 "$f" | median 0)" "${CPU[$row]:-na}" "$(wc -l <"$f")/$RUNS"
done
if [ -n "${MED[corral]:-}" ] && [ -n "${MED[qemu]:-}" ]; then
	echo "corral/qemu throughput ratio: $(ratio "${MED[corral]}" "${MED[qemu]}")"
fi
if [ -n "${CPU[corral]:-}" ] && [ -n "${CPU[qemu]:-}" ]; then
	echo "corral/qemu VMM CPU per request beside the vCPU: $(ratio "${CPU[corral]}" "${CPU[qemu]}")"
fi
