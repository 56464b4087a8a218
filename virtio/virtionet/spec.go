package virtionet

// Feature bits of the network device (Virtio 1.2 §5.1.3). The device offers
// the ones marked "offered"; the rest are named for logs and tests.
const (
	FCsum              = 1 << 0  // VIRTIO_NET_F_CSUM: the device takes partial checksums on transmit (offered with a vnet-header backend)
	FGuestCsum         = 1 << 1  // VIRTIO_NET_F_GUEST_CSUM: the driver takes partial checksums on receive (offered with a vnet-header backend)
	FCtrlGuestOffloads = 1 << 2  // VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: the driver may change its receive offloads (offered with them)
	FMTU               = 1 << 3  // VIRTIO_NET_F_MTU: mtu in config is valid (offered)
	FMAC               = 1 << 5  // VIRTIO_NET_F_MAC: mac in config is valid (offered)
	FGuestTSO4         = 1 << 7  // VIRTIO_NET_F_GUEST_TSO4: the driver takes TCPv4 GSO frames
	FGuestTSO6         = 1 << 8  // VIRTIO_NET_F_GUEST_TSO6: the driver takes TCPv6 GSO frames
	FGuestECN          = 1 << 9  // VIRTIO_NET_F_GUEST_ECN: the driver takes GSO frames with ECN
	FGuestUFO          = 1 << 10 // VIRTIO_NET_F_GUEST_UFO (not offered)
	FHostTSO4          = 1 << 11 // VIRTIO_NET_F_HOST_TSO4: the device takes TCPv4 GSO frames
	FHostTSO6          = 1 << 12 // VIRTIO_NET_F_HOST_TSO6: the device takes TCPv6 GSO frames
	FHostECN           = 1 << 13 // VIRTIO_NET_F_HOST_ECN: the device takes GSO frames with ECN
	FHostUFO           = 1 << 14 // VIRTIO_NET_F_HOST_UFO (not offered)
	FMrgRxbuf          = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF: a received frame may span several chains (offered)
	FStatus            = 1 << 16 // VIRTIO_NET_F_STATUS: status in config is valid (offered)
	FCtrlVQ            = 1 << 17 // VIRTIO_NET_F_CTRL_VQ: the control queue (offered)
	FCtrlRx            = 1 << 18 // VIRTIO_NET_F_CTRL_RX: promiscuous/all-multicast modes and MAC filter tables (offered; recorded, not applied)
	FCtrlVLAN          = 1 << 19 // VIRTIO_NET_F_CTRL_VLAN: VLAN filter (offered; recorded, not applied)
	FCtrlRxExtra       = 1 << 20 // VIRTIO_NET_F_CTRL_RX_EXTRA (not offered)
	FGuestAnnounce     = 1 << 21 // VIRTIO_NET_F_GUEST_ANNOUNCE (not offered)
	FMQ                = 1 << 22 // VIRTIO_NET_F_MQ: several queue pairs (offered with a MultiQueue backend)
	FCtrlMACAddr       = 1 << 23 // VIRTIO_NET_F_CTRL_MAC_ADDR: the driver may set its MAC (offered)
	FSpeedDuplex       = 1 << 63 // VIRTIO_NET_F_SPEED_DUPLEX (not offered)
)

// Queue indices of the first queue pair. Pair i's are 2i and 2i+1.
const (
	RxQueue = 0 // receiveq1: the device fills guest buffers with frames
	TxQueue = 1 // transmitq1: the guest hands the device frames to send
	// CtrlQueue is the control queue without MQ (it follows the one pair);
	// with MQ it is 2 × max_virtqueue_pairs.
	CtrlQueue = 2
)

// MaxQueuePairs bounds max_virtqueue_pairs (two goroutines per pair; the
// PCI transport has vectors for 255 queues).
const MaxQueuePairs = 64

// The control queue's commands (Virtio 1.2 §5.1.6.5): struct
// virtio_net_ctrl is class u8, command u8, command data (device-readable),
// then ack u8 (device-writable).
const (
	ctrlHdrLen = 2 // class and command

	ctrlClassRx          = 0 // VIRTIO_NET_CTRL_RX (CTRL_RX)
	ctrlRxPromisc        = 0 //   u8 on
	ctrlRxAllMulti       = 1 //   u8 on (ALLUNI..NOBCAST need CTRL_RX_EXTRA: not offered)
	ctrlClassMAC         = 1 // VIRTIO_NET_CTRL_MAC
	ctrlMACTableSet      = 0 //   two tables: le32 entries, entries × 6-byte MACs (CTRL_RX)
	ctrlMACAddrSet       = 1 //   6-byte MAC (CTRL_MAC_ADDR)
	ctrlClassVLAN        = 2 // VIRTIO_NET_CTRL_VLAN (CTRL_VLAN)
	ctrlVLANAdd          = 0 //   le16 vid
	ctrlVLANDel          = 1 //   le16 vid
	ctrlClassAnnounce    = 3 // VIRTIO_NET_CTRL_ANNOUNCE (GUEST_ANNOUNCE: not offered)
	ctrlClassMQ          = 4 // VIRTIO_NET_CTRL_MQ (MQ)
	ctrlMQVQPairsSet     = 0 //   le16 virtqueue_pairs, 1..max_virtqueue_pairs (RSS_CONFIG, HASH_CONFIG: not offered)
	ctrlClassGuestOffl   = 5 // VIRTIO_NET_CTRL_GUEST_OFFLOADS (CTRL_GUEST_OFFLOADS)
	ctrlGuestOfflSet     = 0 //   le64 offload feature bits
	ctrlAckOK            = 0 // VIRTIO_NET_OK
	ctrlAckErr           = 1 // VIRTIO_NET_ERR
	ctrlMACEntryLen      = 6
	ctrlVLANs            = 4096
	ctrlGuestOffloadBits = FGuestCsum | FGuestTSO4 | FGuestTSO6 | FGuestECN | FGuestUFO
)

// MACTableMax is how many entries of each MAC filter table (unicast,
// multicast) the device records; a longer table sets its overflow flag.
const MACTableMax = 64

// ctrlMaxCmd bounds a control command's readable bytes: class, command and
// two MAC tables of 1024 entries each. Longer commands are answered
// VIRTIO_NET_ERR without being read.
const ctrlMaxCmd = ctrlHdrLen + 2*(4+1024*ctrlMACEntryLen)

// Configuration space (struct virtio_net_config) offsets.
const (
	cfgMAC               = 0  // u8 mac[6]
	cfgStatus            = 6  // le16 status
	cfgMaxVirtqueuePairs = 8  // le16 max_virtqueue_pairs (valid with MQ; 1 without)
	cfgMTU               = 10 // le16 mtu
	// ConfigSize is the size of the configuration this device exposes
	// (through mtu; speed, duplex and the RSS fields are not offered).
	ConfigSize = 12
)

// StatusLinkUp is VIRTIO_NET_S_LINK_UP in the config status field.
const StatusLinkUp = 1

// The header in front of every frame on both queues (struct
// virtio_net_hdr_v1; with VIRTIO_F_VERSION_1 it is always 12 bytes, and
// num_buffers is present whether or not MRG_RXBUF was negotiated).
const (
	hdrFlags      = 0  // u8 flags
	hdrGSOType    = 1  // u8 gso_type
	hdrHdrLen     = 2  // le16 hdr_len
	hdrGSOSize    = 4  // le16 gso_size
	hdrCsumStart  = 6  // le16 csum_start
	hdrCsumOffset = 8  // le16 csum_offset
	hdrNumBuffers = 10 // le16 num_buffers
	// HeaderLen is the size of struct virtio_net_hdr_v1.
	HeaderLen = 12
)

// Header flags (virtio_net_hdr.flags).
const (
	HdrFNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM: checksum from csum_start is partial
	HdrFDataValid = 2 // VIRTIO_NET_HDR_F_DATA_VALID: checksums already verified (receive only)
)

// GSO types (virtio_net_hdr.gso_type).
const (
	GSONone  = 0    // VIRTIO_NET_HDR_GSO_NONE
	GSOTCPv4 = 1    // VIRTIO_NET_HDR_GSO_TCPV4
	GSOUDP   = 3    // VIRTIO_NET_HDR_GSO_UDP (UFO; not offered)
	GSOTCPv6 = 4    // VIRTIO_NET_HDR_GSO_TCPV6
	GSOUDPL4 = 5    // VIRTIO_NET_HDR_GSO_UDP_L4 (USO; not offered)
	GSOECN   = 0x80 // VIRTIO_NET_HDR_GSO_ECN bit
)

// Frame sizes.
const (
	// EthHeaderLen is an Ethernet II header: two MACs and the EtherType.
	EthHeaderLen = 14
	// VLANTagLen is one 802.1Q tag.
	VLANTagLen = 4
	// DefaultMTU is the MTU used when Config.MTU is 0.
	DefaultMTU = 1500
	// MinMTU and MaxMTU bound Config.MTU (IPv4's minimum; a frame of
	// MaxMTU plus headers still fits MaxFrameLen).
	MinMTU = 68
	MaxMTU = 65535
	// MaxFrameLen is the largest frame either direction carries: 64 KiB of
	// IP datagram (a GSO frame) plus an Ethernet header with one VLAN tag.
	// A transmit chain longer than HeaderLen+MaxFrameLen fails the device.
	MaxFrameLen = 64<<10 + EthHeaderLen + VLANTagLen
)

// frameOverhead is what an Ethernet frame adds to the MTU (header with one
// VLAN tag; no FCS).
const frameOverhead = EthHeaderLen + VLANTagLen
