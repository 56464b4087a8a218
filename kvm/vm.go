package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	fd       int
	mmapSize int
}

// Close releases the VM. Its vCPUs must be closed first.
func (vm *VM) Close() error { return unix.Close(vm.fd) }

// CheckExtension returns KVM_CHECK_EXTENSION's answer for c on this VM,
// which for some capabilities (KVM_CAP_XSAVE2) differs from the system's.
func (vm *VM) CheckExtension(c Cap) (int, error) {
	return checkExtension(vm.fd, c)
}

// SetTSSAddr places the three pages KVM needs for real-mode emulation on
// Intel hosts at addr (outside guest RAM).
func (vm *VM) SetTSSAddr(addr uint32) error {
	if _, err := ioctl(vm.fd, kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("kvm: KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr places the identity-map page KVM needs on Intel hosts
// at addr (outside guest RAM).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	var a [8]byte
	binary.LittleEndian.PutUint64(a[:], addr)
	if _, err := ioctlBuf(vm.fd, kvmSetIdentityMapAddr, a[:]); err != nil {
		return fmt.Errorf("kvm: KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctl(vm.fd, kvmCreateIRQChip, 0); err != nil {
		return errIoctl(kvmCreateIRQChip, err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 timer, with a dummy PC speaker port.
func (vm *VM) CreatePIT2() error {
	var cfg [64]byte
	binary.LittleEndian.PutUint32(cfg[:], 1) // KVM_PIT_SPEAKER_DUMMY
	if _, err := ioctlBuf(vm.fd, kvmCreatePIT2, cfg[:]); err != nil {
		return errIoctl(kvmCreatePIT2, err)
	}
	return nil
}

// SetUserMemoryRegion maps host memory mem as guest physical memory at gpa in
// the given slot. mem must stay mapped until the VM is closed or the slot is
// deleted (a zero-length region).
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	var r [32]byte
	binary.LittleEndian.PutUint32(r[0:], slot)
	binary.LittleEndian.PutUint64(r[8:], gpa)
	binary.LittleEndian.PutUint64(r[16:], uint64(len(mem)))
	if len(mem) > 0 {
		binary.LittleEndian.PutUint64(r[24:], hostAddr(mem))
	}
	if _, err := ioctlBuf(vm.fd, kvmSetUserMemoryRegion, r[:]); err != nil {
		return fmt.Errorf("kvm: KVM_SET_USER_MEMORY_REGION slot %d at %#x (%d bytes): %w", slot, gpa, len(mem), err)
	}
	return nil
}

// IRQLine sets the level of an interrupt line of the in-kernel irqchip
// (a GSI: ISA IRQs 0-15 reach the PIC and IOAPIC, 16-23 the IOAPIC).
func (vm *VM) IRQLine(irq uint32, high bool) error {
	var l [8]byte
	binary.LittleEndian.PutUint32(l[0:], irq)
	if high {
		binary.LittleEndian.PutUint32(l[4:], 1)
	}
	if _, err := ioctlBuf(vm.fd, kvmIRQLine, l[:]); err != nil {
		return fmt.Errorf("kvm: KVM_IRQ_LINE irq %d level %v: %w", irq, high, err)
	}
	return nil
}

const (
	irqfdFlagDeassign = 1 << 0

	ioeventfdFlagDatamatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2
)

// IRQFD makes a write to eventfd efd inject GSI gsi; deassign undoes it.
func (vm *VM) IRQFD(efd int, gsi uint32, deassign bool) error {
	var b [32]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(efd))
	binary.LittleEndian.PutUint32(b[4:], gsi)
	if deassign {
		binary.LittleEndian.PutUint32(b[8:], irqfdFlagDeassign)
	}
	if _, err := ioctlBuf(vm.fd, kvmIRQFD, b[:]); err != nil {
		return fmt.Errorf("kvm: KVM_IRQFD fd %d gsi %d deassign %v: %w", efd, gsi, deassign, err)
	}
	return nil
}

// IOEvent describes an ioeventfd: a guest write to Addr (Len bytes, in port
// or memory space) that KVM turns into a signal on eventfd FD without
// exiting to user space.
type IOEvent struct {
	Addr      uint64
	Len       uint32 // 0, 1, 2, 4 or 8; 0 matches any length (MMIO only)
	FD        int
	PIO       bool
	Datamatch *uint64 // when set, only writes of this value signal
}

// IOEventFD registers (or with deassign, removes) an ioeventfd.
func (vm *VM) IOEventFD(ev IOEvent, deassign bool) error {
	var b [64]byte
	var flags uint32
	if ev.Datamatch != nil {
		flags |= ioeventfdFlagDatamatch
		binary.LittleEndian.PutUint64(b[0:], *ev.Datamatch)
	}
	if ev.PIO {
		flags |= ioeventfdFlagPIO
	}
	if deassign {
		flags |= ioeventfdFlagDeassign
	}
	binary.LittleEndian.PutUint64(b[8:], ev.Addr)
	binary.LittleEndian.PutUint32(b[16:], ev.Len)
	binary.LittleEndian.PutUint32(b[20:], uint32(int32(ev.FD)))
	binary.LittleEndian.PutUint32(b[24:], flags)
	if _, err := ioctlBuf(vm.fd, kvmIOEventFD, b[:]); err != nil {
		return fmt.Errorf("kvm: KVM_IOEVENTFD addr %#x len %d pio %v deassign %v: %w", ev.Addr, ev.Len, ev.PIO, deassign, err)
	}
	return nil
}

// SignalMSI injects one message-signalled interrupt. It reports whether the
// interrupt was delivered (false: the guest had it masked or blocked).
func (vm *VM) SignalMSI(addr uint64, data uint32) (bool, error) {
	var b [32]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(addr))
	binary.LittleEndian.PutUint32(b[4:], uint32(addr>>32))
	binary.LittleEndian.PutUint32(b[8:], data)
	n, err := ioctlBuf(vm.fd, kvmSignalMSI, b[:])
	if errors.Is(err, unix.EPERM) {
		// KVM returns -1 when no local APIC accepted the message.
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("kvm: KVM_SIGNAL_MSI addr %#x data %#x: %w", addr, data, err)
	}
	return n > 0, nil
}

// Route is one GSI routing entry: either an irqchip pin or an MSI message.
type Route struct {
	GSI uint32
	// Irqchip routes: Chip is 0 (PIC master), 1 (PIC slave) or 2 (IOAPIC).
	IsMSI bool
	Chip  uint32
	Pin   uint32
	// MSI routes.
	MSIAddr uint64
	MSIData uint32
}

// SetGSIRouting replaces the whole GSI routing table.
func (vm *VM) SetGSIRouting(routes []Route) error {
	buf := make([]byte, routingHeader+len(routes)*routingEntrySize)
	binary.LittleEndian.PutUint32(buf[0:], uint32(len(routes)))
	for i, r := range routes {
		e := buf[routingHeader+i*routingEntrySize:]
		binary.LittleEndian.PutUint32(e[0:], r.GSI)
		if r.IsMSI {
			binary.LittleEndian.PutUint32(e[4:], 2) // KVM_IRQ_ROUTING_MSI
			binary.LittleEndian.PutUint32(e[16:], uint32(r.MSIAddr))
			binary.LittleEndian.PutUint32(e[20:], uint32(r.MSIAddr>>32))
			binary.LittleEndian.PutUint32(e[24:], r.MSIData)
		} else {
			binary.LittleEndian.PutUint32(e[4:], 1) // KVM_IRQ_ROUTING_IRQCHIP
			binary.LittleEndian.PutUint32(e[16:], r.Chip)
			binary.LittleEndian.PutUint32(e[20:], r.Pin)
		}
	}
	if _, err := ioctlBuf(vm.fd, kvmSetGSIRouting, buf); err != nil {
		return fmt.Errorf("kvm: KVM_SET_GSI_ROUTING (%d routes): %w", len(routes), err)
	}
	return nil
}

// DefaultIRQChipRoutes returns the legacy interrupt routes as a PC wires
// them (and as QEMU programs KVM): GSIs 0-15 reach the PICs and the IOAPIC,
// 16-23 the IOAPIC only; GSI 0 (the PIT) goes to IOAPIC pin 2, matching the
// IRQ0 override in the MP and ACPI tables, and GSI 2 (the PIC cascade) is
// left out. SetGSIRouting replaces the table, so callers adding MSI routes
// keep these.
func DefaultIRQChipRoutes() []Route {
	var rs []Route
	for gsi := uint32(0); gsi < 24; gsi++ {
		if gsi == 2 {
			continue
		}
		if gsi < 16 {
			chip := uint32(0)
			if gsi >= 8 {
				chip = 1
			}
			rs = append(rs, Route{GSI: gsi, Chip: chip, Pin: gsi % 8})
		}
		pin := gsi
		if gsi == 0 {
			pin = 2
		}
		rs = append(rs, Route{GSI: gsi, Chip: 2, Pin: pin})
	}
	return rs
}

// CreateVCPU creates vCPU id and maps its kvm_run structure.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("kvm: KVM_CREATE_VCPU %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	run, err := unix.Mmap(int(fd), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("kvm: mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{fd: int(fd), vmfd: vm.fd, id: id, run: run}, nil
}
