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
//   - halt: "corral-guest: halted", then cli; hlt forever.
//   - fault: "corral-guest: triple-faulting (ud2, empty IDT)", then lidt
//     with limit 0 and ud2: a triple fault (KVM_EXIT_SHUTDOWN). Should it
//     survive it prints "corral-guest: survived ud2" (ExitFaultSurvived).
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
