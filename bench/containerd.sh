#!/usr/bin/env bash
# bench/containerd.sh: issue 14's shim overhead: `ctr run --rm IMAGE id
# true` through containerd-shim-corral-v2 (warm, and with its Cold option)
# against `corral exec -- true` (warm, and --cold) on the same kernel,
# process start to exit, alternating, plus the shim's and corral exec's
# step timings for the last run of each, in tests/tcgkvm (QEMU TCG with emulated SVM: the
# only KVM on hosts without /dev/kvm). A private containerd (shim/e2e's
# TestBenchCtrRun, shim/internal/ctrdtest) runs the shim; nothing touches
# a system containerd.
#
#   bench/containerd.sh [-n RUNS] [-k]
#
# -n  rounds (default 5): one of each per round
# -k  keep going without flock (you hold /tmp/tcgkvm.lock yourself)
#
# Output: the "ctrbench:" lines on stdout; the whole console in
# $OUT/console.txt ($OUT defaults to ~/.cache/corral/bench-containerd; not
# under /tmp, which the VM mounts a tmpfs over, because corral and the
# shim are shipped at their host paths).
set -euo pipefail

runs=5 lock=1
while getopts "n:kh" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	k) lock= ;;
	*)
		sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$HOME/.cache/corral/bench-containerd}
mkdir -p "$out"
cd "$root"
CGO_ENABLED=0 go build -o "$out/corral" ./cmd/corral
(cd shim && CGO_ENABLED=0 go build -o "$out/containerd-shim-corral-v2" ./cmd/containerd-shim-corral-v2)
go build -o "$out/tcgkvm" ./tests/tcgkvm

tcgkvm=("$out/tcgkvm" -stall-retries 2 -timeout 60m
	-host-files "containerd,ctr,/etc/hosts,/etc/resolv.conf,$out/corral,$out/containerd-shim-corral-v2"
	-env "CORRAL_SHIM=$out/containerd-shim-corral-v2" -require kvm,root,tools
	-console "$out/console.txt" ./shim/e2e --
	-test.run 'TestBenchCtrRun$' -test.timeout 55m -corral "$out/corral" -bench-rounds "$runs")
status=0
if [ -n "$lock" ]; then
	flock /tmp/tcgkvm.lock "${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
else
	"${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
fi
grep -a 'ctrbench: ' "$out/console.txt" | sed 's/\r$//' || true
exit "$status"
