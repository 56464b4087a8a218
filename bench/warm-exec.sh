#!/usr/bin/env bash
# bench/warm-exec.sh: issue 13's warm `corral exec -- true` against a cold
# one (--cold), process start to exit, alternating, in tests/tcgkvm (QEMU
# TCG with emulated SVM: the only KVM on hosts without /dev/kvm). The
# first exec, which boots and builds the snapshot, is reported apart.
#
#   bench/warm-exec.sh [-n RUNS] [-k] [-d]
#
# -n  rounds (default 5): one warm and one cold exec each
# -k  keep going without flock (you hold /tmp/tcgkvm.lock yourself)
# -d  each exec runs with --log debug and its log (step timings) goes into
#     the console
#
# Output: the table on stdout; the whole console in $OUT/console.txt
# ($OUT defaults to ~/.cache/corral/bench-warm-exec; not under /tmp, which
# the VM mounts a tmpfs over, because corral is shipped at its host path).
set -euo pipefail

runs=5 lock=1 execlog=info
while getopts "n:kdh" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	k) lock= ;;
	d) execlog=debug ;;
	*)
		sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$HOME/.cache/corral/bench-warm-exec}
mkdir -p "$out"
cd "$root"
CGO_ENABLED=0 go build -o "$out/corral" ./cmd/corral
go build -o "$out/tcgkvm" ./tests/tcgkvm

tcgkvm=("$out/tcgkvm" -stall-retries 2 -timeout 60m -host-files "$out/corral"
	-console "$out/console.txt" ./bench/agentvsqemu --
	-test.run 'TestWarmExec$' -test.timeout 55m -corral "$out/corral" -runs "$runs" -execlog "$execlog")
status=0
if [ -n "$lock" ]; then
	flock /tmp/tcgkvm.lock "${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
else
	"${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
fi
grep -a 'agentvsqemu: ' "$out/console.txt" | sed 's/\r$//' || true
exit "$status"
