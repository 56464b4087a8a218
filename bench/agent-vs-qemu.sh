#!/usr/bin/env bash
# bench/agent-vs-qemu.sh: issue 11's Linux-guest figures beside QEMU, run
# inside tests/tcgkvm (QEMU TCG with emulated SVM: the only KVM on hosts
# without /dev/kvm). See bench/README.md, "corral exec and 9p vs QEMU".
#
#   bench/agent-vs-qemu.sh [-n RUNS] [-r RUNS_9P] [-s SIZE_MIB] [-p] [-q MACHINES] [-k]
#
# -n  rounds of `corral exec -- true` vs QEMU microvm (default 5; the
#     Run-/init-to-command series gets half as many)
# -r  rounds of the 9p read (default 3)
# -s  MiB in the 9p file (default 256)
# -p  also profile an in-process Corral (agentvm) and write the CPU
#     profiles to $OUT/*.pprof (go tool pprof -top FILE)
# -q  QEMU machines for the 9p read, ';'-separated (default "pc;microvm,pcie=on")
# -k  keep going without flock (you hold /tmp/tcgkvm.lock yourself)
#
# Output: the tables on stdout; the whole console in $OUT/console.txt
# ($OUT defaults to ~/.cache/corral/bench-agentvsqemu; not under /tmp, which
# the VM mounts a tmpfs over, because corral is shipped at its host path).
set -euo pipefail

runs=5 runs9p=3 size=256 pprof= machines="pc;microvm,pcie=on" lock=1
while getopts "n:r:s:pq:kh" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	r) runs9p=$OPTARG ;;
	s) size=$OPTARG ;;
	p) pprof=1 ;;
	q) machines=$OPTARG ;;
	k) lock= ;;
	*)
		sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
		exit 2
		;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$HOME/.cache/corral/bench-agentvsqemu}
mkdir -p "$out"
cd "$root"
CGO_ENABLED=0 go build -o "$out/corral" ./cmd/corral
go build -o "$out/tcgkvm" ./tests/tcgkvm

run_args=(-test.run 'TestExec$|Test9pRead$' -test.timeout 60m -corral "$out/corral"
	-runs "$runs" -runs9p "$runs9p" -size "$size" -qemu9p "$machines")
if [ -n "$pprof" ]; then
	run_args[1]='TestExec$|Test9pRead$|TestProfile$'
	run_args+=(-pprof /tmp/agentvsqemu)
fi
# 3G: the 256 MiB file lives in the VM's tmpfs beside one L2 guest at a time.
tcgkvm=("$out/tcgkvm" -l2-qemu -m 3G -timeout 70m -host-files "$out/corral"
	-console "$out/console.txt" ./bench/agentvsqemu -- "${run_args[@]}")
status=0
if [ -n "$lock" ]; then
	flock /tmp/tcgkvm.lock "${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
else
	"${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
fi

grep -a 'agentvsqemu: ' "$out/console.txt" | grep -av 'agentvsqemu: pprof ' | sed 's/\r$//' || true
if [ -n "$pprof" ]; then
	for name in agentvsqemu-exec.pprof agentvsqemu-9p.pprof; do
		grep -a "agentvsqemu: pprof $name " "$out/console.txt" | awk '{print $4}' | tr -d '\r' |
			base64 -d >"$out/$name" 2>/dev/null && echo "profile: $out/$name" || echo "no profile $name"
	done
fi
exit "$status"
