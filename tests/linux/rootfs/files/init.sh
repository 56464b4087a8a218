#!/bin/sh
# Corral test init (tests/linux/rootfs). Runs as PID 1 from the initramfs or
# from an ext4 root. Every line it prints starts with "corral-init: " so tests
# can follow the boot on the serial console.
#
# Settings: /etc/corral/config (baked in by the Go builder), then the kernel
# command line, which wins:
#   corral.script_b64=<base64>   test script to run (overrides /etc/corral/script)
#   corral.exit=poweroff|reboot|port|halt   how to end the VM (default poweroff)
#   corral.shell=1               interactive shell on the console instead of a script
#   corral.dhcp=0|1              run udhcpc on interfaces without an address
# It never exits (PID 1 must not): it ends the VM, or sleeps if that fails.

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root

say() { echo "corral-init: $*"; }

uptime_s() { read -r up _ </proc/uptime 2>/dev/null && echo "$up" || echo "?"; }

# end_vm STATUS: end the VM with the configured method; never returns.
end_vm() {
	status=$1
	say "exit status $status via $exit_method"
	sync
	case "$exit_method" in
	reboot) reboot -f ;;
	halt) halt -f ;;
	port)
		# Debug-exit device at I/O port 0xf4 (244): one byte, the status.
		# Needs /dev/port (CONFIG_DEVPORT). QEMU's isa-debug-exit exits with 2*v+1.
		printf "\\$(printf '%03o' $((status & 255)))" |
			dd of=/dev/port bs=1 seek=244 count=1 conv=notrunc 2>/dev/null ||
			say "write to port 0xf4 failed"
		poweroff -f
		;;
	*) poweroff -f ;;
	esac
	say "could not end the VM; sleeping"
	while :; do sleep 3600; done
}

say "start"

# Pseudo file systems. On an ext4 root the kernel has mounted devtmpfs on
# /dev already (CONFIG_DEVTMPFS_MOUNT); in an initramfs it has not.
mount -t proc proc /proc && say "mounted proc uptime $(uptime_s)"
mount -t sysfs sysfs /sys && say "mounted sysfs"
if grep -q '^[^ ]* /dev ' /proc/mounts; then
	say "devtmpfs already on /dev"
else
	mount -t devtmpfs devtmpfs /dev && say "mounted devtmpfs"
fi
mount -t ramfs ramfs /run && say "mounted run"

exit_method=poweroff
shell=0
dhcp=1
script_b64=
[ -r /etc/corral/config ] && . /etc/corral/config

read -r cmdline </proc/cmdline
read -r osrelease </proc/sys/kernel/osrelease
for arg in $cmdline; do
	case "$arg" in
	corral.script_b64=*) script_b64=${arg#corral.script_b64=} ;;
	corral.exit=*) exit_method=${arg#corral.exit=} ;;
	corral.shell=*) shell=${arg#corral.shell=} ;;
	corral.dhcp=*) dhcp=${arg#corral.dhcp=} ;;
	esac
done

say "kernel $osrelease cpus $(nproc) cmdline $cmdline"

# Root file system: report what is mounted on /.
while read -r dev mnt fstype opts _; do
	[ "$mnt" = / ] && root="$dev $fstype $opts"
done </proc/mounts
say "root ${root:-unknown}"
for b in /sys/block/*; do
	[ -e "$b" ] || continue
	read -r sectors <"$b/size"
	say "block ${b##*/} $sectors sectors"
done

# Network: bring up every interface; ask DHCP for those the kernel did not
# configure (ip=dhcp does that itself).
ip link set lo up 2>/dev/null
for n in /sys/class/net/*; do
	iface=${n##*/}
	[ "$iface" = lo ] && continue
	[ -e "$n" ] || continue
	read -r mac <"$n/address"
	ip link set "$iface" up && say "$iface up mac $mac"
	addr=$(ip -4 addr show dev "$iface" | sed -n 's/^ *inet \([0-9.\/]*\).*/\1/p' | head -n 1)
	if [ -z "$addr" ] && [ "$dhcp" = 1 ]; then
		say "$iface udhcpc"
		# The event script prints "corral-init: lease ..." once bound.
		udhcpc -i "$iface" -n -q -t 5 -T 2 -s /usr/share/udhcpc/default.script
		addr=$(ip -4 addr show dev "$iface" | sed -n 's/^ *inet \([0-9.\/]*\).*/\1/p' | head -n 1)
	fi
	gw=$(ip route show | sed -n "s/^default via \([0-9.]*\) dev $iface.*/\1/p" | head -n 1)
	say "$iface ${addr:-no-address} via ${gw:-none}"
done

if [ "$shell" = 1 ]; then
	say "shell"
	setsid cttyhack sh
	end_vm $?
fi

if [ -n "$script_b64" ]; then
	echo "$script_b64" | base64 -d >/run/corral-script || say "bad corral.script_b64"
elif [ -r /etc/corral/script ]; then
	cat /etc/corral/script >/run/corral-script
fi

status=0
if [ -s /run/corral-script ]; then
	say "running script uptime $(uptime_s)"
	sh /run/corral-script
	status=$?
	say "script exit status $status uptime $(uptime_s)"
else
	say "no script"
fi
end_vm $status
