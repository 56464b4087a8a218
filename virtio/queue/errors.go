package queue

import (
	"errors"
	"fmt"
)

// ErrGuest is matched (errors.Is) by every error the guest caused by
// breaking the virtqueue protocol. The device is then failed: the transport
// sets DEVICE_NEEDS_RESET and nothing more is taken from the queue.
var ErrGuest = errors.New("virtio queue: guest broke the virtqueue protocol")

// ErrNotReady is returned when a queue is used before it was set up; it is a
// host (VMM) bug, not a guest error.
var ErrNotReady = errors.New("virtio queue: queue is not set up")

// Violation names the rule a guest broke, so callers and tests can branch on
// the kind of a *GuestError.
type Violation int

// The rules a guest can break.
const (
	BadLayout             Violation = iota + 1 // queue size or ring addresses invalid
	AvailJump                                  // avail idx moved by more than the queue size
	BadIndex                                   // head or next index not below the table size
	BufferOutOfRange                           // buffer address+length outside guest RAM or wrapping
	ChainTooLong                               // more descriptors than the table holds: a loop or an overlong chain
	ChainTooBig                                // total bytes in one direction above 2^32-1
	WriteOrder                                 // a device-readable descriptor after a device-writable one
	IndirectNotNegotiated                      // VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC
	NestedIndirect                             // an indirect descriptor inside an indirect table
	BadIndirect                                // indirect table empty, not a multiple of 16, too long, with NEXT, or outside RAM
	BadRequest                                 // the chain's shape does not fit the device's request format
)

// String returns a short name for the violation.
func (v Violation) String() string {
	switch v {
	case BadLayout:
		return "bad queue layout"
	case AvailJump:
		return "avail index jump"
	case BadIndex:
		return "descriptor index out of range"
	case BufferOutOfRange:
		return "buffer outside guest memory"
	case ChainTooLong:
		return "descriptor chain too long or looping"
	case ChainTooBig:
		return "descriptor chain too many bytes"
	case WriteOrder:
		return "readable descriptor after writable"
	case IndirectNotNegotiated:
		return "indirect descriptor not negotiated"
	case NestedIndirect:
		return "nested indirect descriptor"
	case BadIndirect:
		return "bad indirect descriptor"
	case BadRequest:
		return "malformed device request"
	}
	return fmt.Sprintf("violation(%d)", int(v))
}

// GuestError is an error caused by the guest. Its message starts with
// "guest gave" so it reads apart from host faults. It matches ErrGuest.
type GuestError struct {
	Kind   Violation
	Detail string // what the guest gave, e.g. "descriptor 3 at 0x1000 len 0x20 ..."
}

// Error implements error.
func (e *GuestError) Error() string {
	return "virtio queue: guest gave " + e.Detail + " (" + e.Kind.String() + ")"
}

// Is makes errors.Is(err, ErrGuest) true for every GuestError.
func (e *GuestError) Is(target error) bool { return target == ErrGuest }

// Guestf builds a *GuestError; the message should complete "guest gave ...".
// Device models use it for requests whose shape breaks their protocol.
func Guestf(kind Violation, format string, args ...any) *GuestError {
	return &GuestError{Kind: kind, Detail: fmt.Sprintf(format, args...)}
}

// KindOf returns the Violation of a guest error, or 0 if err is not one.
func KindOf(err error) Violation {
	var ge *GuestError
	if errors.As(err, &ge) {
		return ge.Kind
	}
	return 0
}
