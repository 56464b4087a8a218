package boot

import (
	"encoding/binary"
	"fmt"
)

// A few AML (ACPI Machine Language, ACPI 6.5 chapter 20) encoders, enough
// to hand-assemble the DSDT.
const (
	amlZeroOp       = 0x00
	amlOneOp        = 0x01
	amlNameOp       = 0x08
	amlBytePrefix   = 0x0a
	amlWordPrefix   = 0x0b
	amlDWordPrefix  = 0x0c
	amlBufferOp     = 0x11
	amlPackageOp    = 0x12
	amlScopeOp      = 0x10
	amlExtOpPrefix  = 0x5b
	amlDeviceOp     = 0x82 // after amlExtOpPrefix
	amlMaxPkgLength = 1<<28 - 1
)

// amlPkgLength encodes a PkgLength for n bytes of contents; the length
// counts its own encoding too.
func amlPkgLength(n int) []byte {
	for size := 1; size <= 4; size++ {
		total := n + size
		if size == 1 && total < 0x40 {
			return []byte{byte(total)}
		}
		if size > 1 && total < 1<<(4+8*(size-1)) {
			b := make([]byte, size)
			b[0] = byte(size-1)<<6 | byte(total&0xf)
			for i := 1; i < size; i++ {
				b[i] = byte(total >> (4 + 8*(i-1)))
			}
			return b
		}
	}
	panic(fmt.Sprintf("aml: package of %d bytes exceeds PkgLength", n)) // callers build small fixed tables
}

// amlPkg prefixes contents with op and its PkgLength.
func amlPkg(op []byte, contents ...[]byte) []byte {
	var body []byte
	for _, c := range contents {
		body = append(body, c...)
	}
	out := append([]byte{}, op...)
	out = append(out, amlPkgLength(len(body))...)
	return append(out, body...)
}

// amlNameSeg checks and returns a 4-character name segment.
func amlNameSeg(s string) []byte {
	if len(s) != 4 {
		panic("aml: name segment " + s + " is not 4 characters") // fixed names only
	}
	return []byte(s)
}

// amlName encodes Name(seg, value).
func amlName(seg string, value []byte) []byte {
	return append(append([]byte{amlNameOp}, amlNameSeg(seg)...), value...)
}

// amlInteger encodes v with the smallest integer opcode.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, uint32(v))
	}
	panic("aml: integer over 32 bits not needed")
}

// amlPackage encodes Package(){elements...}.
func amlPackage(elements ...[]byte) []byte {
	return amlPkg([]byte{amlPackageOp}, append([][]byte{{byte(len(elements))}}, elements...)...)
}

// amlBuffer encodes Buffer(){data}.
func amlBuffer(data []byte) []byte {
	return amlPkg([]byte{amlBufferOp}, amlInteger(uint64(len(data))), data)
}

// amlDevice encodes Device(seg){body...}.
func amlDevice(seg string, body ...[]byte) []byte {
	return amlPkg([]byte{amlExtOpPrefix, amlDeviceOp}, append([][]byte{amlNameSeg(seg)}, body...)...)
}

// amlScope encodes Scope(seg){body...}; in the DSDT, whose scope is the
// root, seg names a child of the root (as iasl encodes \_SB).
func amlScope(seg string, body ...[]byte) []byte {
	return amlPkg([]byte{amlScopeOp}, append([][]byte{amlNameSeg(seg)}, body...)...)
}

// amlEISAID encodes a compressed EISA ID such as "PNP0A03" as a DWord.
func amlEISAID(id string) []byte {
	if len(id) != 7 {
		panic("aml: EISA ID " + id + " is not 7 characters")
	}
	hex := func(c byte) uint32 {
		switch {
		case c >= '0' && c <= '9':
			return uint32(c - '0')
		case c >= 'A' && c <= 'F':
			return uint32(c-'A') + 10
		}
		panic("aml: EISA ID " + id + " has a non-hex digit")
	}
	v := (uint32(id[0]-'@')&0x1f)<<26 | (uint32(id[1]-'@')&0x1f)<<21 | (uint32(id[2]-'@')&0x1f)<<16 |
		hex(id[3])<<12 | hex(id[4])<<8 | hex(id[5])<<4 | hex(id[6])
	// The ID is stored big-endian.
	return []byte{amlDWordPrefix, byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

// Resource descriptors (ACPI 6.5 section 6.4) for _CRS buffers.
const (
	rdIRQNoFlags   = 0x22 // small item: IRQ descriptor, 2 bytes (edge, active high)
	rdIO16         = 0x47 // small item: I/O port descriptor, 7 bytes
	rdEndTag       = 0x79 // small item: end tag, 1 byte
	rdDWordAddress = 0x87 // large item: DWord address space
	rdWordAddress  = 0x88 // large item: Word address space

	rdTypeMemory = 0
	rdTypeIO     = 1
	rdTypeBus    = 2

	rdMinMaxFixed  = 0x0c // general flags: _MIF | _MAF, positive decode, producer
	rdIOEntire     = 0x03 // I/O type flags: ISA and non-ISA ranges
	rdMemReadWrite = 0x01 // memory type flags: read/write, non-cacheable
)

// rdWord encodes a Word address space descriptor for [lo, hi].
func rdWord(typ, typeFlags byte, lo, hi uint16) []byte {
	b := []byte{rdWordAddress, 13, 0, typ, rdMinMaxFixed, typeFlags}
	for _, v := range []uint16{0, lo, hi, 0, hi - lo + 1} { // granularity, min, max, translation, length
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	return b
}

// rdDWord encodes a DWord address space descriptor for [lo, hi].
func rdDWord(typ, typeFlags byte, lo, hi uint32) []byte {
	b := []byte{rdDWordAddress, 23, 0, typ, rdMinMaxFixed, typeFlags}
	for _, v := range []uint32{0, lo, hi, 0, hi - lo + 1} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return b
}

// rdIO encodes a fixed 16-bit-decode I/O port range of n ports at base.
func rdIO(base uint16, n byte) []byte {
	b := []byte{rdIO16, 1}
	b = binary.LittleEndian.AppendUint16(b, base)
	b = binary.LittleEndian.AppendUint16(b, base)
	return append(b, 1, n)
}

// rdIRQ encodes an ISA IRQ descriptor (edge-triggered, active high,
// exclusive) for irq.
func rdIRQ(irq uint8) []byte {
	mask := uint16(1) << (irq & 15)
	return []byte{rdIRQNoFlags, byte(mask), byte(mask >> 8)}
}

// resourceTemplate joins resource descriptors and ends them with an end tag
// (checksum 0: "treat as correct").
func resourceTemplate(descs ...[]byte) []byte {
	var b []byte
	for _, d := range descs {
		b = append(b, d...)
	}
	return append(b, rdEndTag, 0)
}
