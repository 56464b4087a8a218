package virtio9p

import (
	"encoding/binary"

	"github.com/corral-vmm/corral/virtio/virtio9p/sharetag"
)

// FMountTag is VIRTIO_9P_MOUNT_TAG: the configuration holds the mount tag.
const FMountTag = 1 << 0

// MaxTagLen is the longest mount tag accepted (bytes); tags follow
// sharetag.Check, the rule the guest agent applies too.
const MaxTagLen = sharetag.MaxLen

// Configuration space (struct virtio_9p_config): le16 tag_len, then the
// tag bytes (not NUL terminated).
const (
	cfgTagLen = 0
	cfgTag    = 2
)

// 9P message header: le32 size (including the header), u8 type, le16 tag.
const (
	hdrSize    = 0
	hdrType    = 4
	hdrTag     = 5
	hdrLen     = 7
	rlerrorLen = hdrLen + 4 // Rlerror: header, le32 ecode
)

// Offsets inside the T-messages the transport looks into.
const (
	versionMSize = hdrLen     // Tversion, Rversion: le32 msize
	flushOldTag  = hdrLen     // Tflush: le16 oldtag
	readOffset   = hdrLen + 4 // Tread, Treaddir: fid[4] offset[8] count[4]
	countOff     = hdrLen + 12
	// headMax is how many leading bytes of a T-message the transport
	// copies (and may rewrite) before the server reads it.
	headMax = countOff + 4
)

// 9P2000.L message types the transport knows.
const (
	tRlerror      = 7
	tTlopen       = 12
	tTxattrwalk   = 30
	tTxattrcreate = 32
	tTreaddir     = 40
	tTversion     = 100
	tRversion     = 101
	tTflush       = 108
	tTread        = 116
	tRread        = 117
	// Messages that add or remove fids (conn.fids).
	tTattach      = 104
	tRattach      = 105
	tTwalk        = 110
	tRwalk        = 111
	tTclunk       = 120
	tTremove      = 122
	tTwalkgetattr = 126 // the p9 server's walk-and-getattr extension
)

// Offsets of fids in the T-messages that add or remove one.
const (
	attachFid  = hdrLen     // Tattach: fid[4] afid[4] uname aname n_uname
	walkNewFid = hdrLen + 4 // Twalk, Txattrwalk, Twalkgetattr: fid[4] newfid[4] ...
	clunkFid   = hdrLen     // Tclunk, Tremove: fid[4]
)

// noTag is NOTAG; unusedTag is a tag no in-flight request has (a Tflush
// of a request that is not in flight is given it).
const (
	noTag     = 0xffff
	unusedTag = 0xfffe
)

// Linux errno values the transport answers with itself.
const (
	errEBADMSG  = 74
	errEMSGSIZE = 90
	errEPROTO   = 71
	// errEOPNOTSUPP answers extended-attribute requests to a tree that
	// has none (see Device.noXattrs).
	errEOPNOTSUPP = 95
)

func encodeConfig(tag string) []byte {
	b := make([]byte, cfgTag+len(tag))
	binary.LittleEndian.PutUint16(b[cfgTagLen:], uint16(len(tag)))
	copy(b[cfgTag:], tag)
	return b
}

// rlerror encodes an Rlerror reply.
func rlerror(tag uint16, errno uint32) [rlerrorLen]byte {
	var b [rlerrorLen]byte
	le := binary.LittleEndian
	le.PutUint32(b[hdrSize:], rlerrorLen)
	b[hdrType] = tRlerror
	le.PutUint16(b[hdrTag:], tag)
	le.PutUint32(b[hdrLen:], errno)
	return b
}
