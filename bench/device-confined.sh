#!/usr/bin/env bash
# device-confined.sh: the device data-path benchmarks with and without the
# VMM's confinement (issue 16: "no measurable change ... to the device
# benchmarks with the filter on"). Needs no KVM.
#
# Each package's Go benchmarks (virtio/blk, virtio/virtionet, virtio/vsock,
# virtio/virtio9p: the real device code on a mock driver and fake guest
# memory, with real files, socket pairs and Unix sockets as backends) run in
# a static test binary twice per round: once as is, once confined by
# sandbox.Apply's default policy (seccomp filter, Landlock with the temp
# directory writable, capabilities dropped; internal/benchconfine), the
# order alternating between rounds. benchstat then compares the two sets:
# a "~" in its delta column means no difference it can tell from noise.
#
# Usage: bench/device-confined.sh [-n ROUNDS] [-t BENCHTIME] [-b REGEXP]
#   -n  rounds (default 6; benchstat wants at least 6 samples a side)
#   -t  -test.benchtime per benchmark (default 1s)
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
BENCHTIME=1s
BENCHRE=.
while getopts "n:t:b:h" opt; do
	case $opt in
	n) ROUNDS=$OPTARG ;;
	t) BENCHTIME=$OPTARG ;;
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

run() { # PKG on|off ROUND
	local bin=$WORK/$(basename "$1").test dir=$WORK/tmp-$2-$3-$(basename "$1")
	mkdir -p "$dir"
	# Its own temp directory: the only path the confined binary may write.
	(cd "$WORK" && TMPDIR=$dir CORRAL_BENCH_CONFINE=$2 "$bin" -test.run '^$' \
		-test.bench "$BENCHRE" -test.benchtime "$BENCHTIME" -test.benchmem) \
		>>"$WORK/$2.txt" 2>>"$WORK/$2.err" || {
		cat "$WORK/$2.err" >&2
		die "$1 with confinement $2 failed"
	}
	rm -rf "$dir"
}

for r in $(seq "$ROUNDS"); do
	note "$BENCH: round $r of $ROUNDS"
	for p in "${pkgs[@]}"; do
		if [ $((r % 2)) -eq 1 ]; then run "$p" off "$r"; run "$p" on "$r"; else run "$p" on "$r"; run "$p" off "$r"; fi
	done
done
grep -c 'benchconfine: confined' "$WORK/on.err" >/dev/null || die "no confined run said it was confined"
[ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/off.txt "$WORK"/on.txt "$KEEP"/

bs=${BENCHSTAT:-}
if [ -z "$bs" ]; then
	if command -v benchstat >/dev/null; then bs=benchstat; else bs="go run golang.org/x/perf/cmd/benchstat@latest"; fi
fi
echo "# $(sed -n 's/^benchconfine: //p' "$WORK/on.err" | sort -u | head -1)"
(cd "$WORK" && $bs off.txt on.txt)
