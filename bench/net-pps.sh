#!/usr/bin/env bash
# net-pps.sh: virtio-net packets and bytes per second, Corral vs QEMU
# (virtio-net-pci on a TAP, vhost off), with the same guest in the same run.
#
# The tests/guests "net" guest (its own polled virtio 1.x PCI driver, no
# interrupts, a static address: no DHCP) measures four cases, timing them
# with its TSC (rate from KVM's kvmclock):
#   tx64, tx1500  guest→host: txflood=FRAMES size=S sends S-byte UDP frames
#                 to the host's port 9 as fast as the transmit ring takes
#                 them; a udpsink on the host counts what arrives.
#   rx64, rx1500  host→guest: a udpblast on the host sends S-byte frames at
#                 RX_PPS to the guest's port 9; rxcount=FRAMES counts them
#                 from the first to the FRAMES-th.
# S is the Ethernet frame without FCS (64: 22-byte payload; 1500: 1458).
# MB/s is 10^6 bytes of those frames per second.
#
# Everything runs inside a network namespace of its own (ip netns add,
# deleted on exit); only 10.201.0.0/24 (Corral) and 10.201.1.0/24 (QEMU)
# inside it are used, nothing leaves the machine.
#   corral  corral run --kernel net.elf --memory 64M
#           --net tap=ctap0,host=10.201.0.1/24,ip=10.201.0.2,mac=52:54:00:c0:00:02
#           --cmdline 'ip=10.201.0.2 router=10.201.0.1 txflood=N size=S timeout=MS'
#           (Corral creates the TAP and removes it when the VM ends)
#   qemu    qemu-system-x86_64 -enable-kvm -cpu kvm64 -M pc -bios qboot.rom -m 64
#           -nodefaults -nographic -no-reboot -serial stdio
#           -device isa-debug-exit,iobase=0xf4,iosize=1 -kernel net.elf -append '...'
#           -netdev tap,id=n0,ifname=qtap0,script=no,downscript=no,vhost=off
#           -device virtio-net-pci,netdev=n0,disable-legacy=on,mac=52:54:00:c0:01:02
#           (qtap0: ip tuntap add mode tap, 10.201.1.1/24)
# Each VMM runs each case RUNS times, alternating; the script prints the
# median (min-max) of the guest's frames/s and MB/s per VMM and the ratio of
# the medians, with the guest's kicks and idle share (time it waited for the
# device: near 0 means the guest's own ring-0 work set the pace), the host's
# count, and the CPU time the VMM spent per frame beside its vCPU thread
# (bench/vmmcpu: per-thread schedstat and the TAP's packet counter, sampled
# every 50 ms while frames flow). Every run is bounded by time.
#
# Usage: bench/net-pps.sh [-n RUNS] [-f FRAMES] [-r RX_PPS] [-c CASES] [-v]
#   -n RUNS    runs per VMM and case (default 5)
#   -f FRAMES  frames per run (default 50000)
#   -r RX_PPS  host sender's rate for rx cases (default 60000; 0: unpaced)
#   -c CASES   comma-separated subset of tx64,tx1500,rx64,rx1500
#   -v         print every run's figures and console lines
# Environment:
#   CORRAL   path of a corral binary (default: CGO_ENABLED=0 go build ./cmd/corral)
#   QEMU     qemu binary (default: qemu-system-x86_64)
# Needs root (network namespace, TAPs) and /dev/kvm.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
bench_init net-pps

RUNS=5
FRAMES=50000
RX_PPS=60000
CASES=tx64,tx1500,rx64,rx1500
VERBOSE=0
while getopts "n:f:r:c:vh" opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	f) FRAMES=$OPTARG ;;
	r) RX_PPS=$OPTARG ;;
	c) CASES=$OPTARG ;;
	v) VERBOSE=1 ;;
	*) usage; exit 2 ;;
	esac
done
posint "$RUNS" "$FRAMES" || { note "net-pps: -n and -f want positive numbers"; exit 2; }
case $RX_PPS in '' | *[!0-9]*) echo "net-pps: -r wants a number" >&2; exit 2 ;; esac
[ "$FRAMES" -ge 2 ] || { echo "net-pps: -f wants at least 2 frames" >&2; exit 2; }
IFS=, read -r -a CASE_LIST <<<"$CASES"
for c in "${CASE_LIST[@]}"; do
	case $c in tx64 | tx1500 | rx64 | rx1500) ;; *) echo "net-pps: unknown case $c" >&2; exit 2 ;; esac
done

[ "$(id -u)" = 0 ] || die "needs root (network namespace and TAP devices)"
need_kvm

NS=corral-netpps-$$
PIDS=() # background processes this script started

cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Per-run bounds: the guest's own timeout, and the VMM process a bit longer.
GUEST_MS=60000
VMM_S=90
TOOL_S=80

build_guests net
KERNEL=$WORK/net.elf
go_tool bench/udpsink
go_tool bench/udpblast
go_tool bench/vmmcpu
find_corral
find_qemu
find_qboot

ip netns add "$NS"
NSX=(ip netns exec "$NS") # execs the command: $! of a background "${NSX[@]}" cmd is cmd's PID
nsx() { "${NSX[@]}" "$@"; }
nsx ip link set lo up

# Addresses: host side .1, guest .2.
C_TAP=ctap0 C_HOST=10.201.0.1 C_GUEST=10.201.0.2 C_MAC=52:54:00:c0:00:02
Q_TAP=qtap0 Q_HOST=10.201.1.1 Q_GUEST=10.201.1.2 Q_MAC=52:54:00:c0:01:02
if [ "$HAVE_QEMU" = 1 ]; then
	nsx ip tuntap add mode tap name "$Q_TAP"
	nsx ip addr add "$Q_HOST/24" dev "$Q_TAP"
	nsx ip link set "$Q_TAP" up
	nsx ip neigh replace "$Q_GUEST" lladdr "$Q_MAC" dev "$Q_TAP" nud permanent
fi

# start_vmm ROW CMDLINE OUT DIR TAP: starts the VMM in the background (VMM_PID) and a
# vmmcpu following it (CPU_PID, report in OUT.cpu).
start_vmm() {
	local row=$1 cmdline=$2 out=$3
	case $row in
	corral)
		"${NSX[@]}" timeout -s KILL "$VMM_S" "$CORRAL_BIN" run --kernel "$KERNEL" --memory 64M \
			--net "tap=$C_TAP,host=$C_HOST/24,ip=$C_GUEST,mac=$C_MAC" --cmdline "$cmdline" \
			</dev/null >"$out" 2>&1 &
		;;
	qemu)
		"${NSX[@]}" timeout -s KILL "$VMM_S" "$QEMU" -enable-kvm -cpu kvm64 -M pc "${QEMU_BIOS[@]}" -m 64 \
			-nodefaults -nographic -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=1 \
			-kernel "$KERNEL" -append "$cmdline" \
			-netdev "tap,id=n0,ifname=$Q_TAP,script=no,downscript=no,vhost=off" \
			-device "virtio-net-pci,netdev=n0,disable-legacy=on,mac=$Q_MAC" </dev/null >"$out" 2>&1 &
		;;
	esac
	VMM_PID=$!
	PIDS+=("$VMM_PID")
	# The VMM itself is timeout's child: follow its threads and its TAP's
	# counter (rx_packets: frames it wrote; tx_packets: frames it read).
	local child="" i counter=rx_packets
	[ "${4:-}" = rx ] && counter=tx_packets
	for ((i = 0; i < 100; i++)); do
		child=$(cut -d' ' -f1 "/proc/$VMM_PID/task/$VMM_PID/children" 2>/dev/null || true)
		[ -n "$child" ] && break
		sleep 0.02
	done
	CPU_PID=
	if [ -n "$child" ]; then
		"${NSX[@]}" timeout -s KILL "$TOOL_S" "$WORK/vmmcpu" -pid "$child" -tap "$5" -counter "$counter" \
			-timeout "$((VMM_S))s" >"$3.cpu" 2>&1 &
		CPU_PID=$!
		PIDS+=("$CPU_PID")
	fi
}

# wait_for FILE PATTERN SECONDS: 0 once FILE has a line matching PATTERN.
wait_for() {
	local i
	for ((i = 0; i < $3 * 20; i++)); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	return 1
}

# wait_file FILE SECONDS: 0 once FILE exists.
wait_file() {
	local i
	for ((i = 0; i < $2 * 20; i++)); do
		[ -e "$1" ] && return 0
		sleep 0.05
	done
	return 1
}

# stop PID: SIGTERM (timeout passes it on; the tools then print their line), wait.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# run ROW CASE: one measurement; appends "fps MBps kicks host idle% us/frame" to $WORK/ROW-CASE.txt.
run() {
	local row=$1 case=$2 dir=${2%%[0-9]*} size=${2#[tr]x} out=$WORK/$1-$2.out aux=$WORK/$1-$2.aux
	local host guest tap mac want status cmdline line fps mbs kicks idle extra cpu
	if [ "$row" = corral ]; then host=$C_HOST guest=$C_GUEST tap=$C_TAP mac=$C_MAC want=0; else
		host=$Q_HOST guest=$Q_GUEST tap=$Q_TAP mac=$Q_MAC want=1; fi # QEMU isa-debug-exit: 2*0+1
	: >"$aux"
	rm -f "$out" "$out.cpu" # wait_for must not see the previous run's console
	if [ "$dir" = tx ]; then
		rm -f "$WORK/sink.ready"
		"${NSX[@]}" timeout -s KILL "$TOOL_S" "$WORK/udpsink" -listen 0.0.0.0:9 -idle 30s -duration 70s \
			-ready "$WORK/sink.ready" >"$aux" 2>&1 &
		local sink=$!
		PIDS+=("$sink")
		wait_file "$WORK/sink.ready" 10 || note "net-pps: udpsink not ready"
		cmdline="ip=$guest router=$host txflood=$FRAMES size=$size timeout=$GUEST_MS"
		start_vmm "$row" "$cmdline" "$out" tx "$tap"
		set +e
		wait "$VMM_PID"
		status=$?
		set -e
		sleep 0.2 # the last datagrams reach the socket
		stop "$sink"
		line=$(sed -n 's/^net: txflood .*/&/p' "$out" | tr -d '\r')
		extra=$(sed -n 's/^udpsink: \([0-9]*\) datagrams.*/\1/p' "$aux")
	else
		cmdline="ip=$guest router=$host rxcount=$FRAMES rxport=9 timeout=$GUEST_MS"
		start_vmm "$row" "$cmdline" "$out" rx "$tap"
		if wait_for "$out" '^net: rxcount ready' 30; then
			nsx ip neigh replace "$guest" lladdr "$mac" dev "$tap" nud permanent ||
				note "net-pps: no static neighbour entry on $tap (the guest answers ARP)"
			"${NSX[@]}" timeout -s KILL "$TOOL_S" "$WORK/udpblast" -to "$guest:9" -from "$host" -size "$size" \
				-pps "$RX_PPS" -duration 70s >"$aux" 2>&1 &
			local blast=$!
			PIDS+=("$blast")
		fi
		set +e
		wait "$VMM_PID"
		status=$?
		set -e
		[ -n "${blast:-}" ] && stop "$blast"
		line=$(sed -n 's/^net: rxcount .*frames\/s.*/&/p' "$out" | tr -d '\r')
		# offered in the counted span: seq S..E
		extra=$(echo "$line" | sed -n 's/.* seq \([0-9]*\)\.\.\([0-9]*\),.*/\1 \2/p' | awk '{print $2 - $1 + 1}')
	fi
	[ -n "$CPU_PID" ] && wait "$CPU_PID" 2>/dev/null
	cpu=$(sed -n 's/.* = \([0-9.]*\) us\/frame.*/\1/p' "$out.cpu" 2>/dev/null)
	if [ "$VERBOSE" = 1 ]; then
		grep -v '^virtio:\|^corral-guest\|^pci:' "$out" | sed "s/^/  $row $case: /" >&2
		sed "s/^/  $row $case: /" "$aux" "$out.cpu" >&2
	fi
	fps=$(echo "$line" | sed -n 's/.* \([0-9]*\) frames\/s.*/\1/p')
	mbs=$(echo "$line" | sed -n 's/.* \([0-9.]*\) MB\/s.*/\1/p')
	kicks=$(echo "$line" | sed -n 's/.* \([0-9]*\) kicks.*/\1/p')
	idle=$(echo "$line" | sed -n 's/.* idle \([0-9.]*\)%.*/\1/p')
	if [ "$status" != "$want" ] || [ -z "$fps" ] || ! grep -q '^net: ok' "$out"; then
		note "net-pps: $row $case run failed (status $status, want $want):"
		grep -v '^virtio:' "$out" | head -20 | sed 's/^/  /' >&2
		sed 's/^/  /' "$aux" >&2
		return 0
	fi
	echo "$fps $mbs $kicks ${extra:-na} ${idle:-na} ${cpu:-na}" >>"$WORK/$row-$case.txt"
}

ROWS=()
[ -n "$CORRAL_BIN" ] && ROWS+=(corral)
[ "$HAVE_QEMU" = 1 ] && ROWS+=(qemu)
[ ${#ROWS[@]} -gt 0 ] || { note "net-pps: no VMM to run"; exit 1; }

for ((i = 0; i < RUNS; i++)); do
	for c in "${CASE_LIST[@]}"; do
		for row in "${ROWS[@]}"; do run "$row" "$c"; done
	done
done

echo "virtio-net: $FRAMES frames per run, $RUNS runs per VMM and case, rx sender at ${RX_PPS} pps (0: unpaced), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tx: guest→host (host: datagrams the host socket got); rx: host→guest (host: frames sent in the counted span)"
echo "idle%: share of the guest's measured time spent waiting for the device (near 0: the guest set the pace)"
echo "us/frame: CPU the VMM spent beside its vCPU thread per frame through the TAP, in steady state (bench/vmmcpu); columns after the range are medians"
printf '%-7s %-7s %10s %20s %9s %8s %9s %7s %9s %6s\n' case row frames/s "(min-max)" MB/s kicks host idle% us/frame ok
for c in "${CASE_LIST[@]}"; do
	declare -A MED=() CPU=()
	for row in "${ROWS[@]}"; do
		f=$WORK/$row-$c.txt
		if [ ! -s "$f" ]; then
			printf '%-7s %-7s %10s %20s %9s %8s %9s %7s %9s %6s\n' "$c" "$row" na "" na na na na na "0/$RUNS"
			continue
		fi
		MED[$row]=$(col 1 "$f" | median 0)
		CPU[$row]=$(col 6 "$f" | median 2)
		printf '%-7s %-7s %10s %20s %9s %8s %9s %7s %9s %6s\n' "$c" "$row" "${MED[$row]}" "($(col 1 "$f" | span 0))" \
			"$(col 2 "$f" | median 2)" "$(col 3 "$f" | median 0)" "$(col 4 "$f" | median 0)" "$(col 5 "$f" | median 1)" \
			"${CPU[$row]}" "$(wc -l <"$f")/$RUNS"
	done
	if [ -n "${MED[corral]:-}" ] && [ -n "${MED[qemu]:-}" ]; then
		line=$(printf '%-7s corral/qemu frames/s ratio: %s' "$c" "$(ratio "${MED[corral]}" "${MED[qemu]}")")
		cpu=$(ratio "${CPU[corral]}" "${CPU[qemu]}")
		[ "$cpu" = na ] || line="$line; VMM CPU per frame beside the vCPU: corral/qemu $cpu"
		echo "$line"
	fi
	unset MED CPU
done
