package blk

import "encoding/binary"

// Feature bits of the block device (Virtio 1.2 §5.2.3).
const (
	FSizeMax     = 1 << 1  // VIRTIO_BLK_F_SIZE_MAX: size_max is valid
	FSegMax      = 1 << 2  // VIRTIO_BLK_F_SEG_MAX: seg_max is valid
	FRO          = 1 << 5  // VIRTIO_BLK_F_RO: the disk is read-only
	FBlkSize     = 1 << 6  // VIRTIO_BLK_F_BLK_SIZE: blk_size is valid
	FFlush       = 1 << 9  // VIRTIO_BLK_F_FLUSH: VIRTIO_BLK_T_FLUSH works
	FTopology    = 1 << 10 // VIRTIO_BLK_F_TOPOLOGY: topology is valid
	FMQ          = 1 << 12 // VIRTIO_BLK_F_MQ: num_queues is valid
	FDiscard     = 1 << 13 // VIRTIO_BLK_F_DISCARD
	FWriteZeroes = 1 << 14 // VIRTIO_BLK_F_WRITE_ZEROES
)

// Request types (virtio_blk_req.type).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeDiscard     = 11
	TypeWriteZeroes = 13
)

// Status values written into the last byte of a request.
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// SectorSize is the unit of virtio-blk sector numbers.
const SectorSize = 512

// IDBytes is the length of the GET_ID answer (the serial, NUL padded).
const IDBytes = 20

// Request header (struct virtio_blk_outhdr): le32 type, le32 reserved
// (ioprio), le64 sector.
const (
	hdrType   = 0
	hdrSector = 8
	hdrSize   = 16
)

// Discard / write-zeroes segment (struct virtio_blk_discard_write_zeroes).
const (
	dwzSector     = 0  // le64
	dwzNumSectors = 8  // le32
	dwzFlags      = 12 // le32
	dwzSize       = 16

	dwzFlagUnmap = 1 // VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
)

// Configuration space (struct virtio_blk_config) offsets.
const (
	cfgCapacity               = 0  // le64, in 512-byte sectors
	cfgSizeMax                = 8  // le32
	cfgSegMax                 = 12 // le32
	cfgGeometry               = 16 // le16 cylinders, u8 heads, u8 sectors (not offered)
	cfgBlkSize                = 20 // le32
	cfgPhysBlockExp           = 24 // u8: log2(physical block / blk_size)
	cfgAlignmentOffset        = 25 // u8
	cfgMinIOSize              = 26 // le16, in blk_size units
	cfgOptIOSize              = 28 // le32, in blk_size units
	cfgWriteback              = 32 // u8 (CONFIG_WCE, not offered)
	cfgNumQueues              = 34 // le16
	cfgMaxDiscardSectors      = 36 // le32
	cfgMaxDiscardSeg          = 40 // le32
	cfgDiscardSectorAlignment = 44 // le32
	cfgMaxWriteZeroesSectors  = 48 // le32
	cfgMaxWriteZeroesSeg      = 52 // le32
	cfgWriteZeroesMayUnmap    = 56 // u8
	// ConfigSize is the size of the configuration this device exposes
	// (through write_zeroes_may_unmap and its padding).
	ConfigSize = 60
)

// Limits the device advertises.
const (
	sizeMax             = 1 << 20 // largest data segment the driver should use
	maxDiscardSectors   = 1 << 22 // 2 GiB per discard segment
	maxDiscardSeg       = 32
	maxWriteZeroSectors = 1 << 22
	maxWriteZeroSeg     = 32
)

type configFields struct {
	capacity      uint64
	segMax        uint32
	physBlockExp  uint8
	minIOSize     uint16
	numQueues     uint16
	discard       bool
	discardAlign  uint32
	writeZeroes   bool
	zeroesMayUnmp bool
}

// encodeConfig lays out the configuration space.
func encodeConfig(f configFields) [ConfigSize]byte {
	var b [ConfigSize]byte
	le := binary.LittleEndian
	le.PutUint64(b[cfgCapacity:], f.capacity)
	le.PutUint32(b[cfgSizeMax:], sizeMax)
	le.PutUint32(b[cfgSegMax:], f.segMax)
	le.PutUint32(b[cfgBlkSize:], SectorSize)
	b[cfgPhysBlockExp] = f.physBlockExp
	b[cfgAlignmentOffset] = 0
	le.PutUint16(b[cfgMinIOSize:], f.minIOSize)
	le.PutUint32(b[cfgOptIOSize:], 0)
	le.PutUint16(b[cfgNumQueues:], f.numQueues)
	if f.discard {
		le.PutUint32(b[cfgMaxDiscardSectors:], maxDiscardSectors)
		le.PutUint32(b[cfgMaxDiscardSeg:], maxDiscardSeg)
		le.PutUint32(b[cfgDiscardSectorAlignment:], f.discardAlign)
	}
	if f.writeZeroes {
		le.PutUint32(b[cfgMaxWriteZeroesSectors:], maxWriteZeroSectors)
		le.PutUint32(b[cfgMaxWriteZeroesSeg:], maxWriteZeroSeg)
		if f.zeroesMayUnmp {
			b[cfgWriteZeroesMayUnmap] = 1
		}
	}
	return b
}
