package vsock

import "strconv"

// The socket device's wire format (Virtio 1.2 §5.10).

// Well-known context IDs. CIDs 0 and 1 are reserved, 2 is the host, and
// 0xffffffff is VMADDR_CID_ANY; the upper 32 bits of a CID are reserved.
const (
	HostCID         = 2
	DefaultGuestCID = 3
	maxGuestCID     = 0xffff_fffe
)

// Queue indices.
const (
	RxQueue    = 0 // device → driver packets
	TxQueue    = 1 // driver → device packets
	EventQueue = 2 // device → driver events
	numQueues  = 3
)

// HeaderLen is the size of struct virtio_vsock_hdr (packed, little endian).
const HeaderLen = 44

// Offsets of struct virtio_vsock_hdr's fields.
const (
	hdrSrcCID   = 0  // le64 src_cid
	hdrDstCID   = 8  // le64 dst_cid
	hdrSrcPort  = 16 // le32 src_port
	hdrDstPort  = 20 // le32 dst_port
	hdrLen      = 24 // le32 len: payload bytes after the header
	hdrType     = 28 // le16 type
	hdrOp       = 30 // le16 op
	hdrFlags    = 32 // le32 flags
	hdrBufAlloc = 36 // le32 buf_alloc: the sender's receive buffer size
	hdrFwdCnt   = 40 // le32 fwd_cnt: bytes the sender's application consumed
)

// Op is a packet's operation.
type Op uint16

// Operations.
const (
	OpInvalid       Op = 0
	OpRequest       Op = 1 // connect
	OpResponse      Op = 2 // connection accepted
	OpRST           Op = 3 // reset (also the last step of a close)
	OpShutdown      Op = 4 // no more sending and/or receiving (flags)
	OpRW            Op = 5 // data
	OpCreditUpdate  Op = 6 // the sender's buf_alloc and fwd_cnt changed
	OpCreditRequest Op = 7 // ask the peer for a credit update
)

// String returns the op's spec name.
func (o Op) String() string {
	switch o {
	case OpInvalid:
		return "INVALID"
	case OpRequest:
		return "REQUEST"
	case OpResponse:
		return "RESPONSE"
	case OpRST:
		return "RST"
	case OpShutdown:
		return "SHUTDOWN"
	case OpRW:
		return "RW"
	case OpCreditUpdate:
		return "CREDIT_UPDATE"
	case OpCreditRequest:
		return "CREDIT_REQUEST"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Socket types. Only streams are offered (no feature bit: stream is then
// implied); a SEQPACKET request is refused with RST.
const (
	TypeStream    = 1
	TypeSeqpacket = 2
)

// SHUTDOWN flags.
const (
	ShutdownRcv  = 1 // the sender will receive no more data
	ShutdownSend = 2 // the sender will send no more data
	shutdownBoth = ShutdownRcv | ShutdownSend
)

// Event queue: struct virtio_vsock_event is one le32 id.
const (
	eventLen            = 4
	EventTransportReset = 0 // VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: drop every connection
)

// ConfigSize is the size of struct virtio_vsock_config: le64 guest_cid.
const (
	ConfigSize  = 8
	cfgGuestCID = 0
)

// MaxPayload is the largest payload one packet may carry: Linux's
// VIRTIO_VSOCK_MAX_PKT_BUF_SIZE. Larger len fields are refused.
const MaxPayload = 64 << 10
