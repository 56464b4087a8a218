#!/usr/bin/env bash
# device-confined.sh: the device data-path benchmarks with and without the
# VMM's confinement (issue 16: "no measurable change ... to the device
# benchmarks with the filter on"). Needs no KVM.
#
# The Go benchmarks of virtio/blk, virtio/virtionet, virtio/vsock and
# virtio/virtio9p (the real device code on a mock driver and fake guest
# memory, with real files, socket pairs and Unix sockets as backends) run in
# static test binaries, each benchmark in its own processes, every round
# once as is and once confined by sandbox.Apply's default policy (seccomp
# filter, Landlock with the run's temp directory writable, capabilities
# dropped; internal/benchconfine), the order alternating. bench/devicecpu
# measures host CPU per operation (user + system time of two runs of
# different lengths, differenced: load on a shared host moves it far less
# than wall time) and keeps the wall ns/op beside it; benchstat compares
# the two modes: "~" in its delta column is no difference it can tell
# from noise.
#
# Usage: bench/device-confined.sh [-n ROUNDS] [-c CPU] [-b REGEXP]
#   -n  rounds (default 6; benchstat wants at least 6 samples a side)
#   -c  CPU time the longer run of each benchmark aims at (default 300ms)
#   -b  -test.bench regexp (default .)
# Output: benchstat's table on stdout; the raw outputs in $WORK (removed)
# unless KEEP=DIR names a directory to copy them to.
# Environment:
#   BENCHSTAT  benchstat command (default: benchstat on PATH, else
#              go run golang.org/x/perf/cmd/benchstat@latest)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init device-confined

ROUNDS=6
CPU=300ms
BENCHRE=.
while getopts "n:c:b:h" opt; do
	case $opt in
	n) ROUNDS=$OPTARG ;;
	c) CPU=$OPTARG ;;
	b) BENCHRE=$OPTARG ;;
	*)
		usage
		exit 2
		;;
	esac
done
posint "$ROUNDS" || die "-n $ROUNDS: want a positive number of rounds"

pkgs=(virtio/blk virtio/virtionet virtio/vsock virtio/virtio9p)
for p in "${pkgs[@]}"; do
	# Static: the sandbox refuses per-thread settings in a cgo binary.
	CGO_ENABLED=0 go test -c -o "$WORK/$(basename "$p").test" "./$p"
done

go build -o "$WORK/devicecpu" ./bench/devicecpu
bins=()
for p in "${pkgs[@]}"; do bins+=("$WORK/$(basename "$p").test"); done
"$WORK/devicecpu" -n "$ROUNDS" -bench "$BENCHRE" -cpu "$CPU" -o "$WORK" "${bins[@]}"
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/off.txt "$WORK"/on.txt "$KEEP"/

bs=${BENCHSTAT:-}
if [ -z "$bs" ]; then
	if command -v benchstat >/dev/null; then bs=benchstat; else bs="go run golang.org/x/perf/cmd/benchstat@latest"; fi
fi
(cd "$WORK" && $bs off.txt on.txt)
