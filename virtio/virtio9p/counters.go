package virtio9p

import "sync/atomic"

// Counters are the device's message counters since New.
type Counters struct {
	Requests     uint64 // T-messages taken from the queue and answered
	RequestBytes uint64 // bytes of those T-messages
	ReplyBytes   uint64 // bytes of R-messages written to the guest
	// GuestErrors counts requests the transport answered with Rlerror
	// itself: a size field that does not fit the chain (EBADMSG), a
	// message over msize (EMSGSIZE), a request before Tversion (EPROTO).
	GuestErrors uint64
	// ProtocolErrors counts chains that failed the device: too few
	// readable or writable bytes, a reply larger than the writable part,
	// a message the 9P server could not decode.
	ProtocolErrors uint64
	// DirectReads counts Rreads whose data the file tree read straight
	// into the request's buffers (DirectReader).
	DirectReads uint64
}

type counter int

const (
	cRequests counter = iota
	cRequestBytes
	cReplyBytes
	cGuestErrors
	cProtocolErrors
	cDirectReads
	numCounters
)

// counters is safe for concurrent use.
type counters [numCounters]atomic.Uint64

func (c *counters) add(i counter, n uint64) { c[i].Add(n) }
func (c *counters) inc(i counter)           { c[i].Add(1) }

func (c *counters) snapshot() Counters {
	return Counters{
		Requests:       c[cRequests].Load(),
		RequestBytes:   c[cRequestBytes].Load(),
		ReplyBytes:     c[cReplyBytes].Load(),
		GuestErrors:    c[cGuestErrors].Load(),
		ProtocolErrors: c[cProtocolErrors].Load(),
		DirectReads:    c[cDirectReads].Load(),
	}
}
