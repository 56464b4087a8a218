package virtionet

import "sync/atomic"

// Counters are the device's packet counters since New. Byte counts are
// Ethernet frame bytes without the virtio-net header. Every frame the
// backend gave the device is counted once: delivered (RxPackets) or in one
// RxDrop* counter; every frame the guest sent likewise: TxPackets,
// HandlerConsumed or one TxDrop* counter. The exceptions are the one frame
// each way that Reset may catch in flight, and chains that failed the
// device (Activation.Fail reports those).
type Counters struct {
	RxPackets uint64 // frames written into the guest's receive ring (backend frames and handler replies)
	RxBytes   uint64
	TxPackets uint64 // frames written to the backend
	TxBytes   uint64

	HandlerConsumed uint64 // transmitted frames the frame handler (DHCP) kept from the backend
	HandlerReplies  uint64 // handler replies delivered to the guest (also counted in RxPackets)

	RxDropRunt        uint64 // backend frame shorter than an Ethernet header
	RxDropOversize    uint64 // backend frame longer than the negotiated maximum (MTU, or 64 KiB with guest GSO)
	RxDropGuestBuffer uint64 // frame longer than the guest's receive buffer
	RxDropOffload     uint64 // backend frame using an offload the guest did not accept, or with a bad checksum offset
	RxDropReplyNoRoom uint64 // handler reply dropped: the guest's receive ring was empty (the client retries)
	RxDropNotRunning  uint64 // handler reply dropped: the receive queue is not enabled
	RxBackendErrors   uint64 // backend read errors (the receive loop stops on one)

	TxDropRunt      uint64 // guest frame shorter than an Ethernet header
	TxDropOversize  uint64 // guest frame longer than MTU plus Ethernet header without GSO
	TxDropBadHeader uint64 // virtio-net header asks for an offload not negotiated, or has a bad checksum offset
	TxDropBackend   uint64 // the backend refused the frame (write error)
	TxCsumCompleted uint64 // partial checksums the device completed in software

	CtrlCommands uint64 // control queue commands carried out (VIRTIO_NET_OK)
	CtrlErrors   uint64 // control queue commands answered VIRTIO_NET_ERR: malformed, unknown, not negotiated or refused

	IdleQueueKicks uint64 // kicks of a queue pair beyond those the driver set with VQ_PAIRS_SET (ignored)

	ProtocolErrors uint64 // chains that broke the protocol and stopped a queue (each also reported to Activation.Fail)
}

type counter int

const (
	cRxPackets counter = iota
	cRxBytes
	cTxPackets
	cTxBytes
	cHandlerConsumed
	cHandlerReplies
	cRxDropRunt
	cRxDropOversize
	cRxDropGuestBuffer
	cRxDropOffload
	cRxDropReplyNoRoom
	cRxDropNotRunning
	cRxBackendErrors
	cTxDropRunt
	cTxDropOversize
	cTxDropBadHeader
	cTxDropBackend
	cTxCsumCompleted
	cProtocolErrors
	cCtrlCommands
	cCtrlErrors
	cIdleQueueKicks
	numCounters
)

// counters is safe for concurrent use: the device's goroutines add, the
// caller reads.
type counters [numCounters]atomic.Uint64

func (c *counters) add(i counter, n uint64) { c[i].Add(n) }
func (c *counters) inc(i counter)           { c[i].Add(1) }

func (c *counters) snapshot() Counters {
	return Counters{
		RxPackets:         c[cRxPackets].Load(),
		RxBytes:           c[cRxBytes].Load(),
		TxPackets:         c[cTxPackets].Load(),
		TxBytes:           c[cTxBytes].Load(),
		HandlerConsumed:   c[cHandlerConsumed].Load(),
		HandlerReplies:    c[cHandlerReplies].Load(),
		RxDropRunt:        c[cRxDropRunt].Load(),
		RxDropOversize:    c[cRxDropOversize].Load(),
		RxDropGuestBuffer: c[cRxDropGuestBuffer].Load(),
		RxDropOffload:     c[cRxDropOffload].Load(),
		RxDropReplyNoRoom: c[cRxDropReplyNoRoom].Load(),
		RxDropNotRunning:  c[cRxDropNotRunning].Load(),
		RxBackendErrors:   c[cRxBackendErrors].Load(),
		TxDropRunt:        c[cTxDropRunt].Load(),
		TxDropOversize:    c[cTxDropOversize].Load(),
		TxDropBadHeader:   c[cTxDropBadHeader].Load(),
		TxDropBackend:     c[cTxDropBackend].Load(),
		TxCsumCompleted:   c[cTxCsumCompleted].Load(),
		ProtocolErrors:    c[cProtocolErrors].Load(),
		CtrlCommands:      c[cCtrlCommands].Load(),
		CtrlErrors:        c[cCtrlErrors].Load(),
		IdleQueueKicks:    c[cIdleQueueKicks].Load(),
	}
}
