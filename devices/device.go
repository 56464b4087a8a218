// Package devices holds the guest-visible platform devices of a Corral
// machine and the buses that route guest port I/O and MMIO to them.
//
// The package knows nothing of KVM. The VMM calls Bus.Read and Bus.Write
// from its KVM_EXIT_IO and KVM_EXIT_MMIO handlers, gives interrupt-raising
// devices an IRQLine that it implements with KVM_IRQ_LINE, and gives
// VM-ending devices an ExitFunc. Every device does its own locking, so a
// bus may be used from several vCPU goroutines at once.
//
// Everything a guest writes to a device is untrusted: devices bound every
// guest-controlled value and never panic on bad input.
package devices

import "fmt"

// Device is a guest-visible device on a Bus. offset is relative to the base
// the device was inserted at and len(data) is 1, 2, 4 or 8; the access never
// extends past the size the device was inserted with. Read fills all of data.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// IRQLine drives one interrupt line of the in-kernel irqchip (KVM_IRQ_LINE
// in the VMM). SetLevel(true) then SetLevel(false) is a pulse for an
// edge-triggered pin. Devices call it from vCPU goroutines and from their
// own goroutines, with their own lock held (so level changes arrive in
// order); it must be safe for concurrent use and must not call back into
// the device.
type IRQLine interface {
	SetLevel(high bool) error
}

// IRQFunc adapts a function to IRQLine.
type IRQFunc func(high bool) error

// SetLevel calls f(high).
func (f IRQFunc) SetLevel(high bool) error { return f(high) }

// NoIRQ is an IRQLine that goes nowhere, for devices used without interrupts.
type NoIRQ struct{}

// SetLevel does nothing.
func (NoIRQ) SetLevel(bool) error { return nil }

// ExitKind says why a device ended the VM.
type ExitKind int

// The ways a device can end the VM.
const (
	// ExitReset: the guest asked for a reset (i8042 0xFE, PCI 0xCF9). A
	// VMM without reboot support stops the VM.
	ExitReset ExitKind = iota + 1
	// ExitPowerOff: the guest powered off (ACPI S5).
	ExitPowerOff
	// ExitDebug: the guest wrote Code to the debug-exit port.
	ExitDebug
)

// String names the exit kind.
func (k ExitKind) String() string {
	switch k {
	case ExitReset:
		return "reset"
	case ExitPowerOff:
		return "power-off"
	case ExitDebug:
		return "debug-exit"
	}
	return fmt.Sprintf("ExitKind(%d)", int(k))
}

// Exit is a device's request to end the VM. Code is meaningful for
// ExitDebug only (the byte the guest wrote).
type Exit struct {
	Kind ExitKind
	Code uint8
}

// String describes the exit.
func (e Exit) String() string {
	if e.Kind == ExitDebug {
		return fmt.Sprintf("%v code %d", e.Kind, e.Code)
	}
	return e.Kind.String()
}

// ExitFunc is how a device tells the VMM the guest ended the VM. It is
// called from a vCPU goroutine while the device handles a guest write, so it
// must not block for long (typically: record the exit, cancel a context).
// It may be called more than once if the guest keeps writing.
type ExitFunc func(Exit)

// fill sets every byte of data to v.
func fill(data []byte, v byte) {
	for i := range data {
		data[i] = v
	}
}
