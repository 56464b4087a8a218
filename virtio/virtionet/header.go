package virtionet

import (
	"encoding/binary"
	"math/bits"
)

// header is a decoded struct virtio_net_hdr_v1. Decoding copies the fields
// once from a buffer the device owns, so the guest cannot change them after
// they were checked.
type header struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func decodeHeader(b []byte) header {
	le := binary.LittleEndian
	return header{
		flags:      b[hdrFlags],
		gsoType:    b[hdrGSOType],
		hdrLen:     le.Uint16(b[hdrHdrLen:]),
		gsoSize:    le.Uint16(b[hdrGSOSize:]),
		csumStart:  le.Uint16(b[hdrCsumStart:]),
		csumOffset: le.Uint16(b[hdrCsumOffset:]),
	}
}

func (h header) encode(b []byte, numBuffers uint16) {
	le := binary.LittleEndian
	b[hdrFlags] = h.flags
	b[hdrGSOType] = h.gsoType
	le.PutUint16(b[hdrHdrLen:], h.hdrLen)
	le.PutUint16(b[hdrGSOSize:], h.gsoSize)
	le.PutUint16(b[hdrCsumStart:], h.csumStart)
	le.PutUint16(b[hdrCsumOffset:], h.csumOffset)
	le.PutUint16(b[hdrNumBuffers:], numBuffers)
}

// gso returns the GSO type without the ECN bit.
func (h header) gso() uint8 { return h.gsoType &^ GSOECN }

// gsoFeatures returns the offload a GSO type needs, or false for a type the
// device never offers (UDP, UDP_L4, unknown).
func gsoOffload(gsoType uint8) (Offload, bool) {
	var o Offload
	switch gsoType &^ GSOECN {
	case GSONone:
		if gsoType&GSOECN != 0 {
			return 0, false // ECN without segmentation means nothing
		}
		return 0, true
	case GSOTCPv4:
		o = OffloadCsum | OffloadTSO4
	case GSOTCPv6:
		o = OffloadCsum | OffloadTSO6
	default:
		return 0, false
	}
	if gsoType&GSOECN != 0 {
		o |= OffloadTSOECN
	}
	return o, true
}

// csumFits reports whether a partial checksum's fields lie inside a frame of
// n bytes: the 2-byte checksum at csum_start+csum_offset, after the start.
func (h header) csumFits(n int) bool {
	return int(h.csumStart)+int(h.csumOffset)+2 <= n
}

// completeChecksum finishes a partial checksum as a device without checksum
// offload would (Linux skb_checksum_help): the ones' complement sum of the
// frame from start to its end, whose checksum field holds the pseudo-header
// sum, is folded, complemented and stored at start+offset. 0 is sent as
// 0xffff (UDP's "no checksum" must not appear by accident). The caller
// checked csumFits.
func completeChecksum(frame []byte, start, offset uint16) {
	s := fold(sum16(frame[start:], 0))
	c := ^s
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(frame[int(start)+int(offset):], c)
}

// sum16 adds b as big-endian 16-bit words (a trailing odd byte padded with
// zero) to acc without folding.
func sum16(b []byte, acc uint64) uint64 {
	var carry uint64
	for len(b) >= 32 {
		be := binary.BigEndian
		acc, carry = bits.Add64(acc, be.Uint64(b), carry)
		acc, carry = bits.Add64(acc, be.Uint64(b[8:]), carry)
		acc, carry = bits.Add64(acc, be.Uint64(b[16:]), carry)
		acc, carry = bits.Add64(acc, be.Uint64(b[24:]), carry)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc, carry = bits.Add64(acc, binary.BigEndian.Uint64(b), carry)
		b = b[8:]
	}
	acc, carry = bits.Add64(acc, 0, carry)
	acc += carry // cannot carry again: acc was at most 2^64-2 after adding 1
	for len(b) >= 2 {
		acc, carry = bits.Add64(acc, uint64(binary.BigEndian.Uint16(b)), 0)
		acc += carry
		b = b[2:]
	}
	if len(b) == 1 {
		acc, carry = bits.Add64(acc, uint64(b[0])<<8, 0)
		acc += carry
	}
	return acc
}

// fold reduces a 64-bit ones' complement sum to 16 bits.
func fold(acc uint64) uint16 {
	// 64 → 33 bits → 17 → 16, with end-around carries.
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	acc = (acc >> 16) + (acc & 0xffff)
	return uint16(acc)
}
