package guests

// Guest exit codes (the value written to the debug-exit port). They mirror
// the EXIT_* definitions in src/lib.h; a unit test keeps the two in step.
const (
	// ExitOK is a guest's normal exit code.
	ExitOK = 0
	// ExitBadArgs is smp's exit code for a bad cpus=N or an unusable APIC.
	ExitBadArgs = 2
	// ExitSMPTimeout is smp's exit code when fewer than cpus=N CPUs came up in time.
	ExitSMPTimeout = 3
	// ExitSMPExtra is smp's exit code when more CPUs than cpus=N came up.
	ExitSMPExtra = 4
	// ExitRTCAbsent is rtc's exit code when no CMOS RTC answers.
	ExitRTCAbsent = 5
	// ExitRTCInvalid is rtc's exit code when the RTC gives an impossible date or never settles.
	ExitRTCInvalid = 6
	// ExitSMPNoPage is smp's exit code when no RAM page below 640 KiB is free for the AP trampoline.
	ExitSMPNoPage = 7
	// ExitFaultSurvived is fault's exit code if ud2 with an empty IDT did not stop the VM.
	ExitFaultSurvived = 8
	// ExitVirtioNoDevice: no virtio function with the wanted device ID (at slot=N if given).
	ExitVirtioNoDevice = 10
	// ExitVirtioBadCaps: the function lacks a virtio capability, or a BAR is unassigned or unmappable.
	ExitVirtioBadCaps = 11
	// ExitVirtioFeatures: the device did not reset, lacks VERSION_1, or refused FEATURES_OK.
	ExitVirtioFeatures = 12
	// ExitVirtioQueue: a queue is missing, too small or did not enable, or the device used a bad descriptor id.
	ExitVirtioQueue = 13
	// ExitVirtioTimeout: a request was not used within timeout=MS.
	ExitVirtioTimeout = 14
	// ExitVirtioNeedsReset: the device set DEVICE_NEEDS_RESET (or refused DRIVER_OK).
	ExitVirtioNeedsReset = 15
	// ExitBlkRead: blk's read of sector S (or read past the end) did not give the expected status.
	ExitBlkRead = 16
	// ExitBlkWrite: blk's write to a writable disk failed.
	ExitBlkWrite = 17
	// ExitBlkVerify: blk's written sector read back different.
	ExitBlkVerify = 18
	// ExitBlkFlush: blk's VIRTIO_BLK_T_FLUSH failed.
	ExitBlkFlush = 19
	// ExitBlkGetID: blk's VIRTIO_BLK_T_GET_ID failed.
	ExitBlkGetID = 20
	// ExitBlkROWriteOK: blk's write to a read-only disk succeeded.
	ExitBlkROWriteOK = 21
	// ExitBlkROMismatch: the device's VIRTIO_BLK_F_RO differs from expect=ro|rw.
	ExitBlkROMismatch = 22
	// ExitBlkSeqRead: a seqread request failed or (seqcheck=1) read the wrong data.
	ExitBlkSeqRead = 23
	// ExitBlkBadReqAnswered: the device answered blk's badreq=1 request that has no status byte.
	ExitBlkBadReqAnswered = 24
	// ExitNetNoMAC: the virtio-net device does not offer VIRTIO_NET_F_MAC.
	ExitNetNoMAC = 30
	// ExitNetDHCPTimeout: net got no DHCP OFFER or ACK within timeout=MS.
	ExitNetDHCPTimeout = 31
	// ExitNetDHCPNAK: net's DHCP REQUEST was refused (NAK).
	ExitNetDHCPNAK = 32
	// ExitNetARPTimeout: the router did not answer net's ARP request within timeout=MS.
	ExitNetARPTimeout = 33
	// ExitNetUDPTimeout: no UDP datagram came back to net within timeout=MS.
	ExitNetUDPTimeout = 34
	// ExitCountMemBad: count found its 1 MiB buffer's checksum changed at least once.
	ExitCountMemBad = 40
	// ExitBadStartInfo is the exit code when start_info is missing or has a bad magic.
	ExitBadStartInfo = 125
)

// QEMUStatus is the exit status QEMU's isa-debug-exit device gives its
// process for a guest exit code v: (v << 1) | 1, truncated to 8 bits by the OS.
func QEMUStatus(v int) int {
	return ((v&0xff)<<1 | 1) & 0xff
}
