package dhcp

import "encoding/binary"

// sum16 adds b to a one's-complement accumulator as big-endian 16-bit words
// (an odd trailing byte is padded with zero). It never overflows for inputs
// below 2^32 bytes.
func sum16(b []byte, acc uint64) uint64 {
	for len(b) >= 32 {
		v0 := binary.BigEndian.Uint64(b[0:8])
		v1 := binary.BigEndian.Uint64(b[8:16])
		v2 := binary.BigEndian.Uint64(b[16:24])
		v3 := binary.BigEndian.Uint64(b[24:32])
		acc += v0>>32 + v0&0xffffffff + v1>>32 + v1&0xffffffff +
			v2>>32 + v2&0xffffffff + v3>>32 + v3&0xffffffff
		b = b[32:]
	}
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v>>32 + v&0xffffffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

// fold reduces a one's-complement accumulator to 16 bits.
func fold(acc uint64) uint16 {
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return uint16(acc)
}

// pseudoHeaderSum is the IPv4 UDP pseudo-header's contribution to a checksum.
func pseudoHeaderSum(src, dst uint32, udpLen int) uint64 {
	return uint64(src>>16) + uint64(src&0xffff) + uint64(dst>>16) + uint64(dst&0xffff) +
		ipProtoUDP + uint64(udpLen)
}
