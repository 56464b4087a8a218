// Package guests builds the Corral KVM test guests: tiny freestanding C and
// assembly programs that the machine's gcc compiles at test time into PVH ELF
// kernels, so that Corral and QEMU boot the very same file.
//
// # Boot contract
//
// Each guest is a static ET_EXEC x86-64 ELF linked at 1 MiB (virtual ==
// physical). Its PT_LOAD segments are loaded at their physical addresses; a
// PT_NOTE segment carries the note name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY
// (18), descsz 4, with the 32-bit physical entry address. The note is
// followed by an empty note so the four bytes after the address are zero
// (QEMU 7.2 reads the descriptor of a 64-bit ELF as a 64-bit word). The
// guest is entered per the PVH spec (32-bit protected mode, paging off,
// EBX = struct hvm_start_info), switches to long mode with its own GDT and
// static identity page tables (0-1 GiB write-back, 3-4 GiB uncached for the
// LAPIC/IOAPIC), and runs C code on its own stack. The .bss part of the data
// segment (memsz > filesz) must be zero-filled by the loader, as ELF requires.
//
// Devices used: COM1 at 0x3f8 (LSR polled before each byte, no UART set-up),
// the debug-exit port 0xf4 (one outb of the exit code), the CMOS RTC at
// 0x70/0x71 (rtc), and the xAPIC at the address in IA32_APIC_BASE (smp).
//
// # Guests, command lines and output
//
// Every guest first prints "corral-guest: ready" from 32-bit code, before it
// even loads a GDT: the first serial byte marks when the guest started.
//
//   - hello: "corral-guest: hello", "cmdline: <text>", a start_info summary
//     and one "memmap: base=0x.. size=0x.. type=T" line per entry, then
//     "corral-guest: exit N" and exits with exit=N (default 0).
//   - smp: cpus=N (1..64, default 1), timeout=MS (default 5000). The BSP
//     copies a real-mode trampoline to a free RAM page below 640 KiB (0x8000
//     unless the memmap or the VMM's boot data rule it out), prints
//     "smp: bsp apic A, trampoline 0xP, starting N-1 aps", sends
//     INIT-SIPI-SIPI to all-but-self; each AP prints "cpu K up" (K = LAPIC
//     ID) on its own stack, counts itself in with a locked add and halts. The BSP ends
//     with "smp: N cpus online" (exit 0), "smp: timeout, M of N online"
//     (ExitSMPTimeout) or "smp: M cpus online, expected N" (ExitSMPExtra).
//     cpus=N should equal the VM's vCPU count: extra APs are started too.
//   - rtc: "rtc: status-b 0xBB (bcd|binary, 24h|12h)" then
//     "rtc: YYYY-MM-DD HH:MM:SS", exit 0; binary=0|1 and h24=0|1 first
//     rewrite status B's format bits. Without an RTC: "rtc: no rtc ..."
//     (ExitRTCAbsent); a bad date: "rtc: invalid ..." (ExitRTCInvalid).
//   - spin: "corral-guest: spinning", then jmp . forever.
//   - count: increments a 64-bit counter in RAM, for ever or up to
//     limit=N, and checks a 1 MiB RAM buffer it filled with a xorshift
//     pattern (seed=X) by its FNV-1a checksum: the guest snapshot tests
//     pause, save, restore and resume. It prints "count: step S limit N buf
//     0xA checksum 0xC", then "count K mem ok" (or "count K mem BAD 0xH")
//     every step=S increments (default 2^24: a few lines a second under
//     TCG) and at N, then "count: done N" and exits 0, or ExitCountMemBad
//     if a check failed. corrupt=K flips a buffer bit at count K, to prove
//     the check. ParseCount and CountScenarios read and check its output.
//   - halt: "corral-guest: halted", then cli; hlt forever.
//   - fault: "corral-guest: triple-faulting (ud2, empty IDT)", then lidt
//     with limit 0 and ud2: a triple fault (KVM_EXIT_SHUTDOWN). Should it
//     survive it prints "corral-guest: survived ud2" (ExitFaultSurvived).
//   - blk: drives a virtio-blk PCI function with the polled virtio 1.x
//     driver in src/pci.c and src/virtio.c (see below). Command line:
//     slot=N, expect=ro|rw, read=S, write=W, readpast=1, badreq=1, seqread=N with
//     reqkb=K depth=D seqstart=S seqcheck=1 tsckhz=K, qsize=N, timeout=MS,
//     pcimem=ADDR. It prints "virtio: 00:SS.F dev 0x1042 bar B at 0xA",
//     "blk: capacity C sectors (ro|rw), flush yes|no, queue size Q", then per
//     request "blk: sector S hex: ..." and "blk: sector S: <text>", "blk:
//     write status N" (0 OK, 1 IOERR), "blk: sector W verified", "blk: read
//     past end status N", "blk: flush status N", "blk: serial <id>", "blk:
//     seqread N MiB, R requests of K KiB, depth D: T ticks, U us, X MiB/s,
//     K kicks (tsc F kHz, source)" and "blk: ok" (exit 0). write=W puts
//     "corral-blk-write W", a NUL, and byte i = i & 0xff in sector W. On a
//     read-only disk (VIRTIO_BLK_F_RO) the write is still sent and its
//     status printed; only its success is an error (ExitBlkROWriteOK).
//     badreq=1 last sends a request without a status byte: the device must
//     set DEVICE_NEEDS_RESET ("blk: malformed request: device needs
//     reset"; an answer is ExitBlkBadReqAnswered); the guest resets it,
//     negotiates again and rereads sector S ("blk: recovered after reset").
//     Failures have their own codes: ExitVirtio* and ExitBlk*.
//   - net: drives a virtio-net PCI function (VERSION_1 + MAC, receive queue
//     0 with every entry posted as a 2 KiB buffer, transmit queue 1, both
//     qsize=N entries, default and most 64; 12-byte virtio_net_hdr_v1). It
//     prints "net: mac M", broadcasts a hand-built DHCP DISCOVER, prints
//     "net: offer A.B.C.D from server S", sends the REQUEST and prints
//     "net: lease A.B.C.D/P router R server S lease T s"; or, with
//     ip=A.B.C.D [router=R] [prefix=P], skips DHCP and prints "net: static
//     A.B.C.D/P router R". With udp=PORT it ARPs for the router ("net:
//     router R is at M"), sends "corral-net hello from A.B.C.D" from port
//     sport=P (default 40000) to the router's PORT and prints "net: udp
//     reply from R:PORT: <text>" for the datagram that comes back.
//     Throughput modes (bench/net-pps.sh): txflood=N [size=S] sends N UDP
//     frames of S bytes (60..1514, default 64) to the router's floodport
//     (default 9) as fast as the transmit ring takes them, and prints "net:
//     txflood N frames of S bytes to R:P: T ticks, U us, F frames/s, M MB/s,
//     K kicks, idle I% (tsc H kHz, SRC)"; rxcount=N counts N UDP frames to
//     rxport (default 9) after "net: rxcount ready on A.B.C.D:P" and prints
//     "net: rxcount N frames, B bytes: T ticks, U us, F frames/s, M MB/s,
//     seq S..E, O other, K kicks, idle I% (...)". idle is the share of the
//     measured time the guest waited for the device; the TSC rate comes
//     from kvmclock. src/net.c's header has the details. Then "net: ok"
//     (exit 0). It answers ARP requests for its address. timeout=MS bounds
//     each phase, retry=MS spaces retransmissions. Failures: ExitVirtio*
//     and ExitNet* (rxcount short of N within timeout: ExitNetUDPTimeout;
//     a stalled txflood: ExitVirtioTimeout).
//
// # The virtio driver
//
// src/virtio.c finds the function on bus 0 through configuration mechanism
// #1 (ports 0xCF8/0xCFC), sets memory decode and bus mastering, walks the
// capability list for the COMMON, NOTIFY, ISR and DEVICE structures, and
// reads the BAR they name. A BAR left at 0 (qboot does not assign BARs) is
// sized and placed from pcimem=ADDR (default 0xe0000000) with a "pci: ...
// assigned" line; BARs outside the mapped 0-1 GiB and 3-4 GiB get extra
// uncached page directories. It negotiates VERSION_1 plus what the guest
// asks for and checks FEATURES_OK, sets up split virtqueues (up to 64
// entries, one static page each) with VIRTQ_AVAIL_F_NO_INTERRUPT and MSI-X
// vectors left at NO_VECTOR, kicks unless the device set
// VIRTQ_USED_F_NO_NOTIFY, and polls the used index with pause, bounded by
// the TSC, checking DEVICE_NEEDS_RESET every 100 ms.
//
// Under QEMU with isa-debug-exit, QEMU's own exit status is 2v+1 for a guest
// exit code v; a triple fault with -no-reboot makes QEMU exit 0.
//
// # Building
//
// [Build] compiles one guest into a directory. [Cache] builds into a
// content-addressed directory (the key hashes the embedded sources, the
// flags and the compiler's identity), so rebuilding an unchanged guest is a
// stat. [BuildT] is the test helper: it uses a Cache rooted at
// $CORRAL_GUEST_CACHE, else <os.UserCacheDir>/corral/test-guests, else
// t.TempDir(), and skips the test when gcc is missing. There is no
// package-level mutable state; concurrent builds (even from several test
// binaries) are safe because outputs are renamed into place atomically.
package guests
