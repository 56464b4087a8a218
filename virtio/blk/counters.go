package blk

import "sync/atomic"

// Counters are the device's request counters since Open. Every request the
// device answered is counted once by type (a request of an unknown type
// only in Unsupported), and every answer that was not VIRTIO_BLK_S_OK once
// in Unsupported, GuestErrors or IOErrors. Chains that could not be
// answered at all count in ProtocolErrors.
type Counters struct {
	In          uint64 // VIRTIO_BLK_T_IN requests
	Out         uint64 // VIRTIO_BLK_T_OUT requests
	Flush       uint64 // VIRTIO_BLK_T_FLUSH requests
	GetID       uint64 // VIRTIO_BLK_T_GET_ID requests
	Discard     uint64 // VIRTIO_BLK_T_DISCARD requests
	WriteZeroes uint64 // VIRTIO_BLK_T_WRITE_ZEROES requests

	ReadBytes  uint64 // bytes read from the image for IN requests
	WriteBytes uint64 // bytes written to the image by OUT requests

	Unsupported    uint64 // answered VIRTIO_BLK_S_UNSUPP: unknown type, type not negotiated, unknown segment flags
	GuestErrors    uint64 // answered VIRTIO_BLK_S_IOERR for the guest's fault: sectors out of range, partial sectors, data in the wrong direction, writes to a read-only disk, more data segments than seg_max or one larger than size_max
	IOErrors       uint64 // answered VIRTIO_BLK_S_IOERR for a host I/O failure (read, write, fdatasync, fallocate)
	ProtocolErrors uint64 // chains that broke the protocol (no header, no status byte, a bad descriptor) and failed the queue
}

type counter int

const (
	cIn counter = iota
	cOut
	cFlush
	cGetID
	cDiscard
	cWriteZeroes
	cReadBytes
	cWriteBytes
	cUnsupported
	cGuestErrors
	cIOErrors
	cProtocolErrors
	numCounters
)

// counters is safe for concurrent use: the workers add, the caller reads.
type counters [numCounters]atomic.Uint64

func (c *counters) add(i counter, n uint64) { c[i].Add(n) }
func (c *counters) inc(i counter)           { c[i].Add(1) }

func (c *counters) snapshot() Counters {
	return Counters{
		In:             c[cIn].Load(),
		Out:            c[cOut].Load(),
		Flush:          c[cFlush].Load(),
		GetID:          c[cGetID].Load(),
		Discard:        c[cDiscard].Load(),
		WriteZeroes:    c[cWriteZeroes].Load(),
		ReadBytes:      c[cReadBytes].Load(),
		WriteBytes:     c[cWriteBytes].Load(),
		Unsupported:    c[cUnsupported].Load(),
		GuestErrors:    c[cGuestErrors].Load(),
		IOErrors:       c[cIOErrors].Load(),
		ProtocolErrors: c[cProtocolErrors].Load(),
	}
}
