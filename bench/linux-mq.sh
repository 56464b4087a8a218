#!/usr/bin/env bash
# bench/linux-mq.sh: issue 15's Linux multiqueue figures beside QEMU, run
# inside tests/tcgkvm (QEMU TCG with emulated SVM: the only KVM on hosts
# without /dev/kvm). See bench/README.md, "Linux multiqueue vs QEMU".
#
#   bench/linux-mq.sh [-n RUNS] [-d DISK_MIB] [-s STREAM_MIB] [-c CONNS]
#                     [-b BLK_QUEUES] [-q NET_PAIRS] [-N CORRAL_NET_OPTS]
#                     [-A CORRAL_ARGS] [-E CORRAL_ENV] [-M QEMU_MACHINE] [-p] [-k]
#
# -n  rounds, corral and QEMU alternating which goes first (default 3)
# -d  MiB in the raw disk image (default 256)
# -s  MiB the guest streams to the host over TCP (default 128)
# -c  TCP connections of the stream (default 2)
# -b  virtio-blk request queues, both VMMs (default 2)
# -q  virtio-net queue pairs, both VMMs (default 1); the guest must see
#     this many under both or the run fails
# -N  options appended to corral's --net (queues=N: corral's default is
#     one pair per vCPU)
# -A  more arguments of corral run, space-separated (e.g. "--seccomp log")
# -E  also run corral with NAME=VALUE,... in its environment, a row of its
#     own (e.g. GOMAXPROCS=4)
# -M  QEMU -M (default pc, with qboot)
# -p  only profile an in-process Corral (TestLinuxMQProfile) and write the
#     CPU profiles to $OUT/linux-mq-{blk,net}.pprof (go tool pprof -top FILE)
# -k  keep going without flock (you hold /tmp/tcgkvm.lock yourself)
#
# corral is $CORRAL if set, else built from the work tree.
#
# Both guests: the plain test kernel ($CORRAL_KERNEL in tcgkvm), 2 vCPUs,
# 512 MiB, one busybox initramfs whose /init times dd of /dev/vda and a
# TCP stream (bench/tcpsend) to a listener in the test process; each run
# in a network namespace of its own. Output: the samples and the table on
# stdout; the whole console in $OUT/console.txt ($OUT defaults to
# ~/.cache/corral/bench-linux-mq; not under /tmp, which the VM mounts a
# tmpfs over, because corral and tcpsend are shipped at their host paths).
set -euo pipefail

runs=3 disk=256 stream=128 conns=2 blkq=2 netq=1 corralnet= corralargs= corralenv= machine=pc pprof= lock=1
while getopts "n:d:s:c:b:q:N:A:E:M:pkh" opt; do
	case $opt in
	n) runs=$OPTARG ;;
	d) disk=$OPTARG ;;
	s) stream=$OPTARG ;;
	c) conns=$OPTARG ;;
	b) blkq=$OPTARG ;;
	q) netq=$OPTARG ;;
	N) corralnet=$OPTARG ;;
	A) corralargs=$OPTARG ;;
	E) corralenv=$OPTARG ;;
	M) machine=$OPTARG ;;
	p) pprof=1 ;;
	k) lock= ;;
	*)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 2
		;;
	esac
done

root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$HOME/.cache/corral/bench-linux-mq}
mkdir -p "$out"
cd "$root"
if [ -n "${CORRAL:-}" ]; then
	cp "$CORRAL" "$out/corral"
else
	CGO_ENABLED=0 go build -o "$out/corral" ./cmd/corral
fi
CGO_ENABLED=0 go build -o "$out/tcpsend" ./bench/tcpsend
go build -o "$out/tcgkvm" ./tests/tcgkvm

run_args=(-test.run 'TestLinuxMQ$' -test.timeout 60m -corral "$out/corral" -tcpsend "$out/tcpsend"
	-mqruns "$runs" -mqdisk "$disk" -mqstream "$stream" -mqconns "$conns"
	-mqblkq "$blkq" -mqnetq "$netq" -mqcorralnet "$corralnet" -mqcorralargs "$corralargs" -mqcorralenv "$corralenv" -mqqemu "$machine")
if [ -n "$pprof" ]; then
	run_args[1]='TestLinuxMQProfile$'
	run_args+=(-mqpprof /tmp/linux-mq)
fi
# 3G: the disk image lives in the VM's tmpfs beside one 512 MiB L2 guest.
tcgkvm=("$out/tcgkvm" -l2-qemu -m 3G -timeout 70m -stall-retries 2
	-host-files "$out/corral,$out/tcpsend" -console "$out/console.txt" ./bench/agentvsqemu -- "${run_args[@]}")
status=0
if [ -n "$lock" ]; then
	flock /tmp/tcgkvm.lock "${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
else
	"${tcgkvm[@]}" >"$out/stdout.txt" || status=$?
fi

grep -a 'agentvsqemu: \|linux_mq\|mq_kvm_test' "$out/console.txt" | grep -av 'agentvsqemu: pprof \|agentvsqemu: mq ' | sed 's/\r$//' || true
if [ -n "$pprof" ]; then
	for name in linux-mq-blk.pprof linux-mq-net.pprof; do
		grep -a "agentvsqemu: pprof $name " "$out/console.txt" | awk '{print $4}' | tr -d '\r' |
			base64 -d >"$out/$name" 2>/dev/null && echo "profile: $out/$name" || echo "no profile $name"
	done
fi
exit "$status"
