package kvm

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Sizes and offsets of the VM-wide kernel structures.
const (
	irqchipSize      = 520 // struct kvm_irqchip: chip_id, pad, 512-byte union
	irqchipOffID     = 0
	irqchipOffChip   = 8
	picStateSize     = 16  // struct kvm_pic_state
	ioapicStateSize  = 216 // struct kvm_ioapic_state
	pitChannelSize   = 24  // struct kvm_pit_channel_state
	pitStateSize     = 112 // struct kvm_pit_state2
	clockDataSize    = 48  // struct kvm_clock_data
	ioapicNumPins    = 24  // KVM_IOAPIC_NUM_PINS
	irqchipPICMaster = 0   // KVM_IRQCHIP_PIC_MASTER
	irqchipPICSlave  = 1   // KVM_IRQCHIP_PIC_SLAVE
	irqchipIOAPIC    = 2   // KVM_IRQCHIP_IOAPIC
)

// PICState is struct kvm_pic_state: one i8259 of the in-kernel PIC pair.
type PICState struct {
	LastIRR                uint8
	IRR                    uint8
	IMR                    uint8
	ISR                    uint8
	PriorityAdd            uint8
	IRQBase                uint8
	ReadRegSelect          uint8
	Poll                   uint8
	SpecialMask            uint8
	InitState              uint8
	AutoEOI                uint8
	RotateOnAutoEOI        uint8
	SpecialFullyNestedMode uint8
	Init4                  uint8
	ELCR                   uint8
	ELCRMask               uint8
}

// IOAPICState is struct kvm_ioapic_state: the in-kernel IOAPIC.
type IOAPICState struct {
	BaseAddress uint64
	IOREGSEL    uint32
	ID          uint32
	IRR         uint32
	_           uint32
	Redirtbl    [ioapicNumPins]uint64
}

// PITChannelState is struct kvm_pit_channel_state: one i8254 counter.
type PITChannelState struct {
	Count         uint32 // can be 65536
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64 // host time; KVM_SET_PIT2 reloads the counters from now
}

// PITState is struct kvm_pit_state2: the in-kernel i8254.
type PITState struct {
	Channels [3]PITChannelState
	Flags    uint32 // PITFlag*
	_        [9]uint32
}

// Flags of PITState (KVM_PIT_FLAGS_*).
const (
	PITFlagHPETLegacy    = 0x1
	PITFlagSpeakerDataOn = 0x2
	pitFlagsAll          = 0x3
)

// ClockData is struct kvm_clock_data: the VM's kvmclock.
type ClockData struct {
	Clock    uint64 // guest nanoseconds
	Flags    uint32 // ClockFlag*: which of the fields below KVM filled
	_        uint32
	Realtime uint64 // host CLOCK_REALTIME when Clock was read
	HostTSC  uint64
	_        [4]uint32
}

// Advance moves the saved guest time on by the host's CLOCK_REALTIME
// elapsed since it was read (now, in Unix nanoseconds), when KVM recorded
// that time; a host clock set back moves nothing. It returns the
// advance.
func (c *ClockData) Advance(now uint64) time.Duration {
	if c.Flags&ClockFlagRealtime == 0 || now <= c.Realtime {
		return 0
	}
	d := now - c.Realtime
	c.Clock += d
	return time.Duration(d)
}

// Flags of ClockData (KVM_CLOCK_*).
const (
	ClockFlagTSCStable = 0x2
	ClockFlagRealtime  = 0x4
	ClockFlagHostTSC   = 0x8
	clockFlagsAll      = 0xe
)

// VMState is the VM-wide state KVM holds outside guest memory and vCPUs:
// the in-kernel PICs and IOAPIC, the PIT and kvmclock.
type VMState struct {
	PICMaster PICState
	PICSlave  PICState
	IOAPIC    IOAPICState
	PIT       PITState
	Clock     ClockData
}

// SaveState reads the VM's irqchip, PIT and clock. The VM must have both
// (CreateIRQChip, CreatePIT2), and its vCPUs should be stopped so the
// state is consistent with theirs.
func (vm *VM) SaveState() (*VMState, error) {
	s := &VMState{}
	for _, c := range []struct {
		id  uint32
		out any
	}{{irqchipPICMaster, &s.PICMaster}, {irqchipPICSlave, &s.PICSlave}, {irqchipIOAPIC, &s.IOAPIC}} {
		var buf [irqchipSize]byte
		binary.LittleEndian.PutUint32(buf[irqchipOffID:], c.id)
		if _, err := ioctlBuf(vm.fd, kvmGetIRQChip, buf[:]); err != nil {
			return nil, fmt.Errorf("kvm: KVM_GET_IRQCHIP chip %d: %w", c.id, err)
		}
		if _, err := binary.Decode(buf[irqchipOffChip:], binary.LittleEndian, c.out); err != nil {
			return nil, fmt.Errorf("kvm: KVM_GET_IRQCHIP chip %d: decode: %w", c.id, err)
		}
	}
	if err := vm.getFixed(kvmGetPIT2, pitStateSize, &s.PIT); err != nil {
		return nil, err
	}
	if err := vm.getFixed(kvmGetClock, clockDataSize, &s.Clock); err != nil {
		return nil, err
	}
	// Flags only say which fields KVM filled; RestoreState uses none, so
	// one a later kernel adds is dropped rather than refused.
	s.Clock.Flags &= clockFlagsAll
	return s, nil
}

// RestoreState writes s into a VM whose irqchip and PIT were just created,
// before its vCPUs run.
//
// The clock is set to s.Clock.Clock, with no flags: to have the guest's
// clock move on by the time the snapshot spent on disk, the caller adds
// that time first (ClockData.Advance), as corral.Restore does.
func (vm *VM) RestoreState(s *VMState) error {
	for _, c := range []struct {
		id uint32
		in any
	}{{irqchipPICMaster, &s.PICMaster}, {irqchipPICSlave, &s.PICSlave}, {irqchipIOAPIC, &s.IOAPIC}} {
		var buf [irqchipSize]byte
		binary.LittleEndian.PutUint32(buf[irqchipOffID:], c.id)
		if _, err := binary.Encode(buf[irqchipOffChip:], binary.LittleEndian, c.in); err != nil {
			return fmt.Errorf("kvm: KVM_SET_IRQCHIP chip %d: encode: %w", c.id, err)
		}
		if _, err := ioctlBuf(vm.fd, kvmSetIRQChip, buf[:]); err != nil {
			return fmt.Errorf("kvm: KVM_SET_IRQCHIP chip %d: %w", c.id, err)
		}
	}
	if err := vm.setFixed(kvmSetPIT2, &s.PIT); err != nil {
		return err
	}
	clock := ClockData{Clock: s.Clock.Clock}
	if err := vm.setFixed(kvmSetClock, &clock); err != nil {
		return err
	}
	return nil
}

func (vm *VM) getFixed(req uintptr, size int, out any) error {
	buf := make([]byte, size)
	if _, err := ioctlBuf(vm.fd, req, buf); err != nil {
		return errIoctl(req, err)
	}
	if _, err := binary.Decode(buf, binary.LittleEndian, out); err != nil {
		return fmt.Errorf("kvm: %s: decode: %w", ioctlName(req), err)
	}
	return nil
}

func (vm *VM) setFixed(req uintptr, in any) error {
	buf, err := binary.Append(nil, binary.LittleEndian, in)
	if err != nil {
		return fmt.Errorf("kvm: %s: encode: %w", ioctlName(req), err)
	}
	if _, err := ioctlBuf(vm.fd, req, buf); err != nil {
		return errIoctl(req, err)
	}
	return nil
}
