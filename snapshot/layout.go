package snapshot

import (
	"encoding/binary"
	"math/bits"
)

// layoutSection is the name of the section the Writer keeps the memory
// layout in. AddSection refuses it.
const layoutSection = "memory.layout"

const (
	// ChunkSize is the granularity of memory checksums.
	ChunkSize = 2 << 20
	// pageSize is the format's page: zero pages of this size become holes,
	// and region sizes and file offsets are multiples of it.
	pageSize = 4096
	// regionAlign aligns each region's data in the memory file, so a guest
	// 2 MiB page is one 2 MiB run of the file.
	regionAlign = 2 << 20
	// maxRegions bounds the memory layout's region count.
	maxRegions = 64
	// maxRegionSize is guestmem's bound on one region (64 TiB).
	maxRegionSize = 1 << 46

	// Memory layout section header.
	layID        = 0  // [16]byte snapshot ID
	layChunkSize = 16 // uint32, ChunkSize
	layRegions   = 20 // uint32 region count
	layFileSize  = 24 // uint64 size of the memory file
	layHdrSize   = 32

	// Region entry, layHdrSize + i*regSize.
	regGPA      = 0  // uint64
	regSize     = 8  // uint64 bytes
	regOffset   = 16 // uint64 offset of the region's bytes in the memory file
	regReserved = 24 // uint64, zero
	regEntSize  = 32

	// Chunk entry: one per ChunkSize bytes of each region (the last one of
	// a region may be shorter), regions in table order, after the regions.
	chkCRC     = 0 // uint32 CRC32C of the chunk's bytes; 0 when chkZero
	chkFlags   = 4 // uint32
	chkEntSize = 8

	chkZero = 1 // flag: every byte of the chunk is zero (a hole in the file)

	// Memory file header, at offset 0 of "memory".
	memMagic       = "CORRALMM"
	memHdrMagic    = 0  // [8]byte
	memHdrVersion  = 8  // uint32, Version
	memHdrReserved = 12 // uint32, zero
	memHdrID       = 16 // [16]byte snapshot ID
	memHdrSize     = 32
)

// chunk is the checksum record of one ChunkSize piece of a region.
type chunk struct {
	crc  uint32
	zero bool
}

// memRegion is one guest RAM region and where its bytes are in the file.
type memRegion struct {
	gpa, size, offset uint64
	chunks            []chunk
}

// layout is the decoded memory layout section.
type layout struct {
	id       [IDSize]byte
	fileSize uint64
	regions  []memRegion
}

// chunkCount is the number of chunks of a region of size bytes.
func chunkCount(size uint64) uint64 { return (size + ChunkSize - 1) / ChunkSize }

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

func encodeLayout(l *layout) []byte {
	n := layHdrSize + len(l.regions)*regEntSize
	for _, r := range l.regions {
		n += len(r.chunks) * chkEntSize
	}
	b := make([]byte, n)
	copy(b[layID:], l.id[:])
	binary.LittleEndian.PutUint32(b[layChunkSize:], ChunkSize)
	binary.LittleEndian.PutUint32(b[layRegions:], uint32(len(l.regions)))
	binary.LittleEndian.PutUint64(b[layFileSize:], l.fileSize)
	c := layHdrSize + len(l.regions)*regEntSize
	for i, r := range l.regions {
		e := b[layHdrSize+i*regEntSize:]
		binary.LittleEndian.PutUint64(e[regGPA:], r.gpa)
		binary.LittleEndian.PutUint64(e[regSize:], r.size)
		binary.LittleEndian.PutUint64(e[regOffset:], r.offset)
		for _, ch := range r.chunks {
			if ch.zero {
				binary.LittleEndian.PutUint32(b[c+chkFlags:], chkZero)
			} else {
				binary.LittleEndian.PutUint32(b[c+chkCRC:], ch.crc)
			}
			c += chkEntSize
		}
	}
	return b
}

// parseLayout decodes and validates a memory layout section: regions in
// address order without overlap, page-aligned, their file ranges in the same
// order without overlap, the file size where the last one ends, and exactly
// one chunk record per ChunkSize of each region. Lengths are checked before
// anything is allocated.
func parseLayout(b []byte) (*layout, error) {
	if len(b) < layHdrSize {
		return nil, corruptf("truncated: %d bytes, the header needs %d", len(b), layHdrSize)
	}
	if cs := binary.LittleEndian.Uint32(b[layChunkSize:]); cs != ChunkSize {
		return nil, corruptf("chunk size %d, want %d", cs, ChunkSize)
	}
	n := binary.LittleEndian.Uint32(b[layRegions:])
	if n == 0 || n > maxRegions {
		return nil, corruptf("region count %d, want 1 to %d", n, maxRegions)
	}
	if len(b) < layHdrSize+int(n)*regEntSize {
		return nil, corruptf("truncated: %d bytes, the table of %d regions needs %d", len(b), n, layHdrSize+int(n)*regEntSize)
	}
	l := &layout{fileSize: binary.LittleEndian.Uint64(b[layFileSize:]), regions: make([]memRegion, n)}
	copy(l.id[:], b[layID:layID+IDSize])
	var chunks uint64
	var prevEnd, prevFileEnd uint64 = 0, memHdrSize
	for i := range l.regions {
		e := b[layHdrSize+i*regEntSize:]
		r := memRegion{
			gpa:    binary.LittleEndian.Uint64(e[regGPA:]),
			size:   binary.LittleEndian.Uint64(e[regSize:]),
			offset: binary.LittleEndian.Uint64(e[regOffset:]),
		}
		if v := binary.LittleEndian.Uint64(e[regReserved:]); v != 0 {
			return nil, corruptf("region %d: reserved field is %#x, want 0", i, v)
		}
		if r.size == 0 || r.size%pageSize != 0 || r.size > maxRegionSize {
			return nil, corruptf("region %d at %#x: size %#x is not a multiple of %d from %d to %#x", i, r.gpa, r.size, pageSize, pageSize, uint64(maxRegionSize))
		}
		if r.gpa%pageSize != 0 {
			return nil, corruptf("region %d: guest address %#x is not page aligned", i, r.gpa)
		}
		end, carry := bits.Add64(r.gpa, r.size, 0)
		if carry != 0 {
			return nil, corruptf("region %d at %#x: size %#x wraps the address space", i, r.gpa, r.size)
		}
		if i > 0 && r.gpa < prevEnd {
			return nil, corruptf("region %d at %#x: not above the previous region's end %#x", i, r.gpa, prevEnd)
		}
		if r.offset%pageSize != 0 || r.offset < prevFileEnd {
			return nil, corruptf("region %d at %#x: file offset %#x is not page aligned at or after %#x", i, r.gpa, r.offset, prevFileEnd)
		}
		fileEnd, carry := bits.Add64(r.offset, r.size, 0)
		if carry != 0 || fileEnd > 1<<62 {
			return nil, corruptf("region %d at %#x: file offset %#x is too large", i, r.gpa, r.offset)
		}
		prevEnd, prevFileEnd = end, fileEnd
		chunks += chunkCount(r.size)
		l.regions[i] = r
	}
	if l.fileSize != prevFileEnd {
		return nil, corruptf("memory file size %d, the last region ends at %d", l.fileSize, prevFileEnd)
	}
	// chunks <= 64 * 2^25, so this cannot overflow.
	if want := uint64(layHdrSize) + uint64(n)*regEntSize + chunks*chkEntSize; uint64(len(b)) != want {
		return nil, corruptf("length %d bytes, %d regions of %d chunks need %d", len(b), n, chunks, want)
	}
	c := layHdrSize + int(n)*regEntSize
	for i := range l.regions {
		r := &l.regions[i]
		r.chunks = make([]chunk, chunkCount(r.size))
		for j := range r.chunks {
			crc := binary.LittleEndian.Uint32(b[c+chkCRC:])
			flags := binary.LittleEndian.Uint32(b[c+chkFlags:])
			c += chkEntSize
			if flags&^chkZero != 0 || flags&chkZero != 0 && crc != 0 {
				return nil, corruptf("chunk at guest address %#x: flags %#x with checksum %#x", r.gpa+uint64(j)*ChunkSize, flags, crc)
			}
			r.chunks[j] = chunk{crc: crc, zero: flags&chkZero != 0}
		}
	}
	return l, nil
}

// encodeMemHeader is the start of the memory file, binding it to one
// snapshot.
func encodeMemHeader(id [IDSize]byte) []byte {
	b := make([]byte, memHdrSize)
	copy(b[memHdrMagic:], memMagic)
	binary.LittleEndian.PutUint32(b[memHdrVersion:], Version)
	copy(b[memHdrID:], id[:])
	return b
}

// checkMemHeader checks the memory file's header against the state's ID.
func checkMemHeader(b []byte, id [IDSize]byte) error {
	if len(b) < memHdrSize || string(b[memHdrMagic:memHdrMagic+len(memMagic)]) != memMagic {
		return corruptf("no %q magic: not a corral snapshot memory file", memMagic)
	}
	if v := binary.LittleEndian.Uint32(b[memHdrVersion:]); v != Version {
		return &versionError{got: v}
	}
	if v := binary.LittleEndian.Uint32(b[memHdrReserved:]); v != 0 {
		return corruptf("header reserved field is %#x, want 0", v)
	}
	if got := [IDSize]byte(b[memHdrID : memHdrID+IDSize]); got != id {
		return corruptf("snapshot ID %x, the state file's is %x: the memory file belongs to another snapshot", got, id)
	}
	return nil
}
