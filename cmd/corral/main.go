// Command corral runs microVMs on KVM. See `corral help`.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/corral-vmm/corral/agent/agentcmd"
)

// Exit statuses of the corral command besides the guest's own debug-exit
// codes (0..255, passed through) and 128+n for a stop by signal n. The
// usage text lists them all; keep the two in step.
const (
	exitOK = 0 // the guest powered off or reset, or the console quit
	// exitGuestFault: the guest ended itself badly (triple fault, crash
	// event, halted for good, an instruction KVM cannot emulate). 123, not
	// 124, which timeout(1) wrappers use for their own timeouts.
	exitGuestFault = 123
	exitUsage      = 125 // bad command line or configuration, found before KVM is used
	exitVMMFailure = 126 // the VMM could not create, start or run the machine
)

const usageText = `corral runs Linux kernels and test guests in KVM microVMs.

Usage:
  corral run --kernel PATH [flags]     boot a guest with its console on this terminal
  corral exec [flags] -- CMD [ARGS...] run CMD in a throwaway VM (the host's / read-only
                                       under a tmpfs overlay) and exit with its status
  corral ps [-a] [--json] [--filter F] list this user's VMs (root: everyone's)
  corral inspect ID|NAME               print a VM's record, state and age as JSON
  corral logs [-f] ID|NAME             print (-f: follow) a VM's console log
  corral events [-f] [--since D] [--json]
                                       print (-f: follow) the audit trail
  corral gc                            remove the records of ended and crashed VMs
  corral stop [--timeout D] ID|NAME    ask the guest to power off (Ctrl-Alt-Del on its
                                       keyboard), stop it hard after D (default 10s)
  corral kill ID|NAME                  stop a VM hard at once
  corral pause ID|NAME                 stop a VM's vCPUs and devices where they are
  corral resume ID|NAME                let a paused VM run on
  corral snapshot [--resume] ID|NAME DIR
                                       pause a VM and save it to DIR (restore it with
                                       corral run --restore DIR); --resume lets it run on
  corral dhcp replay [flags] FILE...   run captured frames through the DHCP server
  corral version                       print the version
  corral help                          print this help

corral run flags:
  --kernel PATH     guest kernel: bzImage, or ELF with a PVH entry note (required)
  --initrd PATH     initial ramdisk
  --cmdline STR     kernel command line
  --cpus N          number of vCPUs, 1 to 254 (default 1)
  --memory SIZE     guest RAM, binary units as in QEMU: 512M, 1G (default 256M;
                    at least 16M; more than the host has runs, with a warning)
  --disk PATH[,ro][,serial=ID]
                    a virtio-blk disk on a raw image; repeatable. ro: read-only
                    (guest writes fail, the file is never opened for writing).
                    The image is locked while the VM runs: a second VM writing
                    the same image is refused.
  --net auto|tap=NAME|fd=N[,mac=MAC][,ip=IP][,host=IP/N][,bridge=BR][,dns=IP[+IP]][,dhcp=off][,queues=N]
                    a virtio-net NIC; repeatable. auto creates a TAP for the
                    VM (gone when it ends) with the host side at the first
                    free 10.200.N.1/24 (256 such subnets per host); tap=NAME
                    uses an existing TAP; fd=N uses inherited descriptor N:
                    an attached TAP, or a SOCK_SEQPACKET/SOCK_DGRAM socket
                    carrying one Ethernet frame per message (no root needed).
                    The built-in DHCP server gives the guest ip= (default .2)
                    with the host side as router; dhcp=off leaves DHCP to the
                    host. auto, tap= and bridge= need root or CAP_NET_ADMIN.
                    queues=N: N queue pairs (1-64), each with its own TAP
                    queue (a multi-queue TAP) and guest queue pair (virtio
                    MQ); default one per vCPU, at most 8, and one on an
                    existing single-queue TAP or an fd=.
  --share PATH:TAG[,ro]
                    share the host directory PATH with the guest over virtio-9p
                    as mount tag TAG (1-31 of A-Z a-z 0-9 . _ -); repeatable. The
                    guest mounts it with: mount -t 9p -o trans=virtio,version=9p2000.L
                    TAG /mnt. It cannot reach outside PATH (no .., no symlink is
                    followed on the host, no device nodes); ro refuses every change.
  --vsock on|cid=N[,uds=PATH]
                    a virtio-vsock device, served in user space (no vhost); the
                    guest's CID is N (default 3). uds=PATH is a Unix socket for
                    host programs, in Firecracker's hybrid-vsock convention:
                    write "CONNECT <port>\n" to reach guest port <port>; guest
                    connections to host port P go to the socket PATH_P.
  --name NAME       the VM's name in the inventory (printable, no spaces):
                    corral ps, inspect, logs take it for the ID
  --label KEY=VALUE a label in the inventory and the audit trail; repeatable
  --ttl D           the VM may run for D (1h, 90s): then it is asked to power
                    off and stopped 10s later, audited as vm.expired. Measured
                    on the monotonic clock. corral run also stops its VM when
                    its parent process dies (SIGTERM by PR_SET_PDEATHSIG).
  --no-acpi         no ACPI tables (the guest sees only the MP table)
  --restore DIR     restore the snapshot in DIR (corral snapshot) instead of
                    booting: the guest goes on where it was, as a new VM with
                    its own ID. --kernel, --initrd, --cmdline, --cpus,
                    --memory and --no-acpi are the snapshot's; --net, --disk,
                    --share TAG and --vsock uds= give new host sides. The
                    memory file is checked against its checksums first.
  --snapshot-dir DIR
                    corral snapshot may write this VM's snapshots under DIR
                    (created if missing; the confined VMM can write nowhere
                    else)
  --log LEVEL       VMM log level on stderr: debug, info, warn, error (default warn)
  --seccomp on|log|off
                    after setup every thread runs under a system call allow-list
                    (default on); a forbidden call is named on stderr and kills
                    corral with SIGSYS. log allows and logs to the kernel audit
                    log (dmesg) instead; off and log are debugging aids only
  --landlock on|off after setup only the VM's own files can be opened (default
                    on; skipped, with a warning, where the kernel lacks Landlock)
  --caps drop|keep  capabilities are dropped after setup (default drop)
  --user UID[:GID]  switch to this user after setup (GID defaults to UID); the
                    state directory must be writable by it. See docs/security.md

Console:
  The guest's serial port (COM1) is this terminal, in raw mode: keys go to the
  guest. Press Ctrl-A then x to quit, Ctrl-A Ctrl-A to send Ctrl-A, Ctrl-A h
  for help. When standard input is not a terminal, it is passed through as is
  and the console is plain standard output. Guest output that the terminal
  cannot take in time is dropped and counted, never allowed to hold the VM.

Signals:
  SIGINT, SIGTERM or SIGHUP stops the machine; a second one ends corral at
  once (the terminal is restored either way).

Exit status of corral run:
  v         the guest wrote byte v to the debug-exit port (I/O port 0xf4)
  0         the guest powered off or reset (i8042, ACPI or PCI reset), or the
            console quit with Ctrl-A x
  123       guest fault: the guest triple-faulted, raised a crash event, halted
            with interrupts off and nothing to wake it, or ran an instruction
            KVM cannot emulate; its registers are printed on standard error
  125       usage error: bad flags, a missing or invalid kernel, initrd or
            disk, or a configuration that cannot boot (a command line longer
            than the kernel accepts, an initrd too large for --memory)
  126       VMM failure: KVM unavailable, a host error, or the VMM failed
            while running the machine
  128+n     corral was stopped by signal n (SIGINT, SIGTERM, SIGHUP)
  A guest may also exit with 123, 125 or 126 through the debug-exit port;
  the message on standard error tells the cases apart.

What is running (no daemon):
  Every VM registers in a directory under the state directory ($CORRAL_STATE_DIR,
  else /run/corral for root, else $XDG_RUNTIME_DIR/corral): its record, console
  log and a lock its VMM holds while it lives, so a killed VMM shows as crashed.
  ID|NAME is a VM's ID, a unique ID prefix, or its name. A user sees only
  their own VMs; root sees everyone's.
  corral ps flags:
    -a              include ended and crashed VMs (until corral gc)
    --json          print JSON (the records, state, age_seconds, ttl_left_seconds)
    --metrics       with --json: each running VM's counters from its control
                    socket (vCPU exits by reason, devices, DHCP), as "metrics"
    --filter F      label=KEY=VALUE, label=KEY, name=NAME or state=STATE; repeatable
  corral events flags:
    -f              follow the trail
    --since D       only events of the last D (a Go duration: 10m, 2h), by the
                    boot-time clock, never the calendar
    --json          print the records as they are (JSON Lines)
  The audit trail is /var/log/corral/audit.jsonl for root, else audit.jsonl in
  the state directory ($CORRAL_AUDIT_LOG overrides): vm.created, vm.started,
  vm.ended (exit reason and code), vm.crashed (found by ps or gc),
  vm.collected, one JSON line each, synced before the event is acted on, and
  mirrored to the systemd journal (journalctl CORRAL_VM_ID=ID) when it runs.
  Exit status of ps, inspect, logs, events and gc: 0 done, 1 failed (no such
  VM, an ambiguous ID prefix, an unwritable trail), 125 usage error.

corral exec: run "corral exec --help" for its flags and exit statuses.

corral dhcp replay: run "corral dhcp replay --help" for its flags.
`

// version is set at link time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// One static binary is also the guest agent: corral exec puts this
	// executable into the guest as its /init.
	if agentcmd.Invoked(os.Args, os.Getpid()) {
		os.Exit(agentcmd.Main(os.Args[1:]))
	}
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return runCommand(ctx, args[1:], stdin, stdout, stderr)
	case "exec":
		return execCommand(ctx, args[1:], stdin, stdout, stderr)
	case "dhcp":
		return dhcpCommand(ctx, args[1:], stdout, stderr)
	case "ps":
		return psCommand(args[1:], stdout, stderr)
	case "inspect":
		return inspectCommand(args[1:], stdout, stderr)
	case "logs":
		return logsCommand(ctx, args[1:], stdout, stderr)
	case "events":
		return eventsCommand(ctx, args[1:], stdout, stderr)
	case "gc":
		return gcCommand(args[1:], stdout, stderr)
	case "stop":
		return stopCommand(ctx, args[1:], stdout, stderr)
	case "kill":
		return killCommand(ctx, args[1:], stdout, stderr)
	case "pause", "resume":
		return pauseCommand(ctx, args[0], args[1:], stdout, stderr)
	case "snapshot":
		return snapshotCommand(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "corral", version)
		return exitOK
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText)
		return exitOK
	default:
		fmt.Fprintf(stderr, "corral: unknown command %q\n\n%s", args[0], usageText)
		return exitUsage
	}
}
