#!/usr/bin/env bash
# device-confined.sh: the device data-path benchmarks with and without the
# VMM's confinement (issue 16: "no measurable change ... to the device
# benchmarks with the filter on"). Needs no KVM.
#
# The Go benchmarks of virtio/blk, virtio/virtionet, virtio/vsock and
# virtio/virtio9p (the real device code on a mock driver and fake guest
# memory, with real files, socket pairs and Unix sockets as backends) run in
# static test binaries, every round once as is and once confined by
# sandbox.Apply's default policy (seccomp filter, Landlock with the run's
# temp directory writable, capabilities dropped; internal/benchconfine),
# the order alternating, at real-time priority where chrt can give it.
# benchstat compares the two modes: "~" in its delta column is no
# difference it can tell from noise.
#
# Usage: bench/device-confined.sh [-n ROUNDS] [-t BENCHTIME] [-b REGEXP] [-N]
#   -n  rounds (default 6; benchstat wants at least 6 samples a side)
#   -t  -test.benchtime per benchmark (default 300ms)
#   -b  -test.bench regexp (default .)
#   -N  normal priority (no chrt)
# Output: benchstat's table on stdout; the raw outputs in $WORK (removed)
# unless KEEP=DIR names a directory to copy them to.
# Environment:
#   BENCHSTAT  benchstat command (default: benchstat on PATH, else
#              go run golang.org/x/perf/cmd/benchstat@latest)
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init device-confined

ROUNDS=6
BENCHTIME=300ms
RT=1
BENCHRE=.
while getopts "n:t:b:Nh" opt; do
	case $opt in
	n) ROUNDS=$OPTARG ;;
	t) BENCHTIME=$OPTARG ;;
	N) RT=0 ;;
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

# Real-time priority (SCHED_FIFO, inherited by the runtime's threads) when
# chrt can give it: other load on a shared host then waits instead of
# spreading the timings (±50–250% between runs without it, ±10% with).
# The kernel's real-time throttling still leaves others 5% of each second,
# and the pause between binaries lets them run.
rt=()
if [ "$RT" = 1 ] && chrt -f 10 true 2>/dev/null; then rt=(chrt -f 10); else note "$BENCH: running at normal priority (expect noisy timings)"; fi

run() { # PKG on|off
	local bin=$WORK/$(basename "$1").test dir=$WORK/tmp-$2-$(basename "$1")
	mkdir -p "$dir"
	# Its own temp directory: the only path the confined binary may write.
	(cd "$WORK" && TMPDIR=$dir CORRAL_BENCH_CONFINE=$2 "${rt[@]}" "$bin" -test.run '^$' \
		-test.bench "$BENCHRE" -test.benchtime "$BENCHTIME" -test.benchmem) \
		>>"$WORK/$2.txt" 2>"$WORK/$2.err" || {
		cat "$WORK/$2.err" >&2
		die "$1 with confinement $2 failed"
	}
	if [ "$2" = on ] && ! grep -q 'benchconfine: confined' "$WORK/on.err"; then
		die "$1: CORRAL_BENCH_CONFINE=on but the binary did not say it was confined"
	fi
	rm -rf "$dir"
	sleep 1
}

for r in $(seq "$ROUNDS"); do
	note "$BENCH: round $r of $ROUNDS"
	for p in "${pkgs[@]}"; do
		if [ $((r % 2)) -eq 1 ]; then run "$p" off; run "$p" on; else run "$p" on; run "$p" off; fi
	done
done
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/off.txt "$WORK"/on.txt "$KEEP"/
echo "# on: $(sed -n 's/^benchconfine: //p' "$WORK/on.err" | head -1)"

bs=${BENCHSTAT:-}
if [ -z "$bs" ]; then
	if command -v benchstat >/dev/null; then bs=benchstat; else bs="go run golang.org/x/perf/cmd/benchstat@latest"; fi
fi
(cd "$WORK" && $bs off.txt on.txt)
