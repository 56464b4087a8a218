package kvm

import "encoding/binary"

// Regs is struct kvm_regs: the general-purpose registers of a vCPU.
type Regs struct {
	RAX, RBX, RCX, RDX, RSI, RDI, RSP, RBP uint64
	R8, R9, R10, R11, R12, R13, R14, R15   uint64
	RIP, RFLAGS                            uint64
}

// Segment is struct kvm_segment: a segment register as the CPU caches it.
type Segment struct {
	Base     uint64
	Limit    uint32
	Selector uint16
	Type     uint8
	Present  uint8
	DPL      uint8
	DB       uint8
	S        uint8
	L        uint8
	G        uint8
	AVL      uint8
	Unusable uint8
	_        uint8
}

// DTable is struct kvm_dtable: a descriptor-table register (GDTR, IDTR).
type DTable struct {
	Base  uint64
	Limit uint16
	_     [3]uint16
}

// Sregs is struct kvm_sregs: segment, control and descriptor-table registers.
type Sregs struct {
	CS, DS, ES, FS, GS, SS, TR, LDT Segment
	GDT, IDT                        DTable
	CR0, CR2, CR3, CR4, CR8         uint64
	EFER                            uint64
	APICBase                        uint64
	InterruptBitmap                 [4]uint64
}

// FPU is struct kvm_fpu: the legacy x87/SSE state of a vCPU.
type FPU struct {
	FPR        [8][16]byte
	FCW        uint16
	FSW        uint16
	FTWX       uint8
	_          uint8
	LastOpcode uint16
	LastIP     uint64
	LastDP     uint64
	XMM        [16][16]byte
	MXCSR      uint32
	_          uint32
}

// LAPICState is struct kvm_lapic_state: the 1 KiB register page of a local APIC.
type LAPICState struct {
	Regs [1024]byte
}

// Register offsets in the local APIC page.
const (
	LAPICRegID    = 0x20
	LAPICRegLVT0  = 0x350
	LAPICRegLVT1  = 0x360
	LAPICRegSpurv = 0xf0
)

// LAPIC delivery modes for the LVT entries.
const (
	LAPICModeFixed  = 0
	LAPICModeNMI    = 4
	LAPICModeExtINT = 7
)

// Get returns the 32-bit register at off.
func (l *LAPICState) Get(off int) uint32 { return binary.LittleEndian.Uint32(l.Regs[off:]) }

// Set writes the 32-bit register at off.
func (l *LAPICState) Set(off int, v uint32) { binary.LittleEndian.PutUint32(l.Regs[off:], v) }

// CPUIDEntry is one struct kvm_cpuid_entry2.
type CPUIDEntry struct {
	Function uint32
	Index    uint32
	Flags    uint32
	EAX      uint32
	EBX      uint32
	ECX      uint32
	EDX      uint32
}

// CPUIDFlagSignificantIndex marks a leaf whose sub-leaf (ECX) matters.
const CPUIDFlagSignificantIndex = 1

// Binary sizes of the variable-length ioctl structures.
const (
	cpuidEntrySize   = 40 // struct kvm_cpuid_entry2
	cpuidHeaderSize  = 8  // struct kvm_cpuid2 before entries
	msrEntrySize     = 16 // struct kvm_msr_entry
	msrsHeaderSize   = 8  // struct kvm_msrs before entries
	routingEntrySize = 48 // struct kvm_irq_routing_entry
	routingHeader    = 8  // struct kvm_irq_routing before entries
)

// MSR is one model-specific register value (struct kvm_msr_entry).
type MSR struct {
	Index uint32
	Data  uint64
}

// Well-known MSR indices.
const (
	MSRIA32TSC                  = 0x10
	MSRIA32APICBase             = 0x1b
	MSRIA32SysenterCS           = 0x174
	MSRIA32SysenterESP          = 0x175
	MSRIA32SysenterEIP          = 0x176
	MSRIA32MiscEnable           = 0x1a0
	MSRSTAR                     = 0xc0000081
	MSRLSTAR                    = 0xc0000082
	MSRCSTAR                    = 0xc0000083
	MSRSyscallMask              = 0xc0000084
	MSRKernelGSBase             = 0xc0000102
	MSRIA32MiscEnableFastString = 1
)

// MP states (KVM_GET_MP_STATE).
const (
	MPStateRunnable      = 0
	MPStateUninitialized = 1
	MPStateInitReceived  = 2
	MPStateHalted        = 3
	MPStateSIPIReceived  = 4
)
