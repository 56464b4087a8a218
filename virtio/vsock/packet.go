package vsock

import (
	"encoding/binary"
	"fmt"
)

// Header is struct virtio_vsock_hdr, decoded. Every field of a header the
// guest sent is hostile: Check says whether a decoded header may be acted
// on at all, and the connection code bounds the credit figures itself.
type Header struct {
	SrcCID   uint64
	DstCID   uint64
	SrcPort  uint32
	DstPort  uint32
	Len      uint32
	Type     uint16
	Op       Op
	Flags    uint32
	BufAlloc uint32
	FwdCnt   uint32
}

// DecodeHeader reads a header from the first HeaderLen bytes of b. It
// reports false when b is shorter.
func DecodeHeader(b []byte) (Header, bool) {
	if len(b) < HeaderLen {
		return Header{}, false
	}
	b = b[:HeaderLen]
	return Header{
		SrcCID:   binary.LittleEndian.Uint64(b[hdrSrcCID:]),
		DstCID:   binary.LittleEndian.Uint64(b[hdrDstCID:]),
		SrcPort:  binary.LittleEndian.Uint32(b[hdrSrcPort:]),
		DstPort:  binary.LittleEndian.Uint32(b[hdrDstPort:]),
		Len:      binary.LittleEndian.Uint32(b[hdrLen:]),
		Type:     binary.LittleEndian.Uint16(b[hdrType:]),
		Op:       Op(binary.LittleEndian.Uint16(b[hdrOp:])),
		Flags:    binary.LittleEndian.Uint32(b[hdrFlags:]),
		BufAlloc: binary.LittleEndian.Uint32(b[hdrBufAlloc:]),
		FwdCnt:   binary.LittleEndian.Uint32(b[hdrFwdCnt:]),
	}, true
}

// Encode writes h into the first HeaderLen bytes of b, which must be that
// long.
func (h *Header) Encode(b []byte) {
	b = b[:HeaderLen]
	binary.LittleEndian.PutUint64(b[hdrSrcCID:], h.SrcCID)
	binary.LittleEndian.PutUint64(b[hdrDstCID:], h.DstCID)
	binary.LittleEndian.PutUint32(b[hdrSrcPort:], h.SrcPort)
	binary.LittleEndian.PutUint32(b[hdrDstPort:], h.DstPort)
	binary.LittleEndian.PutUint32(b[hdrLen:], h.Len)
	binary.LittleEndian.PutUint16(b[hdrType:], h.Type)
	binary.LittleEndian.PutUint16(b[hdrOp:], uint16(h.Op))
	binary.LittleEndian.PutUint32(b[hdrFlags:], h.Flags)
	binary.LittleEndian.PutUint32(b[hdrBufAlloc:], h.BufAlloc)
	binary.LittleEndian.PutUint32(b[hdrFwdCnt:], h.FwdCnt)
}

// String formats h for logs.
func (h Header) String() string {
	return fmt.Sprintf("%s %d:%d->%d:%d len %d type %d flags %#x buf_alloc %d fwd_cnt %d",
		h.Op, h.SrcCID, h.SrcPort, h.DstCID, h.DstPort, h.Len, h.Type, h.Flags, h.BufAlloc, h.FwdCnt)
}

// Verdict is what the device does with a packet the guest sent, decided
// from its header alone.
type Verdict int

// Verdicts of Check.
const (
	// Accept: the packet may be handed to its connection.
	Accept Verdict = iota
	// DropAddress: the source is not the guest's CID or the destination
	// not the host's; the packet is dropped and counted, never answered
	// (as vhost-vsock does: there is nobody to answer).
	DropAddress
	// ResetBadLen: len is larger than the chain's payload or MaxPayload;
	// answered with RST (the stream would be corrupt).
	ResetBadLen
	// ResetType: not a stream packet; answered with RST.
	ResetType
	// ResetOp: an unknown op; answered with RST.
	ResetOp
)

// String names the verdict.
func (v Verdict) String() string {
	switch v {
	case Accept:
		return "accept"
	case DropAddress:
		return "drop: wrong CID"
	case ResetBadLen:
		return "reset: bad length"
	case ResetType:
		return "reset: not a stream"
	case ResetOp:
		return "reset: unknown op"
	}
	return "verdict(" + fmt.Sprint(int(v)) + ")"
}

// Check decides a guest packet's fate from its header and the payload
// bytes its chain carries after the header (avail). An RST is never
// answered with an RST, whatever else is wrong with it: Check returns
// DropAddress or Accept for one, and the device ignores a stray RST.
func Check(h *Header, guestCID uint64, avail uint32) Verdict {
	if h.SrcCID != guestCID || h.DstCID != HostCID {
		return DropAddress
	}
	if h.Op == OpRST {
		return Accept
	}
	if h.Len > avail || h.Len > MaxPayload {
		return ResetBadLen
	}
	if h.Type != TypeStream {
		return ResetType
	}
	if h.Op < OpRequest || h.Op > OpCreditRequest {
		return ResetOp
	}
	return Accept
}
