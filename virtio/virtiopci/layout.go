package virtiopci

// PCI identity of virtio 1.x ("modern") devices (Virtio 1.2 §4.1.2).
const (
	VendorID       = 0x1af4
	DeviceIDBase   = 0x1040 // + virtio device type
	Revision       = 1      // non-transitional
	SubsystemIDMin = 0x40   // non-transitional devices use 0x40 or higher
)

// Vendor-specific capability (struct virtio_pci_cap) layout, as offsets
// into pci.Capability.Data (which starts after the ID and next bytes).
const (
	capLen        = 0  // u8 cap_len: whole capability length
	capCfgType    = 1  // u8 cfg_type
	capBar        = 2  // u8 bar
	capID         = 3  // u8 id
	capOffset     = 6  // le32 offset within the BAR
	capLength     = 10 // le32 length of the structure
	capDataSize   = 14 // virtio_pci_cap is 16 bytes with ID and next
	capNotifyMult = 14 // le32 notify_off_multiplier (notify cap only)
	capPCICfgData = 14 // u8 pci_cfg_data[4] (PCI_CFG cap only)
)

// cfg_type values.
const (
	CfgCommon = 1
	CfgNotify = 2
	CfgISR    = 3
	CfgDevice = 4
	CfgPCI    = 5
)

// PCI capability IDs.
const (
	capIDVendor = 0x09
	capIDMSIX   = 0x11
)

// BAR 0 layout: every structure the capabilities point at, plus the MSI-X
// table and PBA, in one 64-bit memory BAR.
const (
	barIndex     = 0
	barSize      = 0x4000
	commonOffset = 0x0000
	commonSize   = 0x38
	isrOffset    = 0x0800
	isrSize      = 4
	deviceOffset = 0x1000
	deviceMax    = 0x800
	notifyOffset = 0x1800
	notifyMax    = 0x800
	// NotifyMultiplier is notify_off_multiplier: queue q's notify register
	// is at notifyOffset + q*NotifyMultiplier (queue_notify_off = q).
	NotifyMultiplier = 4
	msixTableOffset  = 0x2000
	msixTableMax     = 0x1000
	msixPBAOffset    = 0x3000
	msixPBAMax       = 0x1000
	msixEntrySize    = 16

	// MaxQueues is the most queues this layout holds: one notify register
	// and one MSI-X vector (plus the config vector) each.
	MaxQueues = msixTableMax/msixEntrySize - 1
)

// Common configuration (struct virtio_pci_common_cfg) offsets.
const (
	ccDeviceFeatureSelect = 0x00 // le32 RW
	ccDeviceFeature       = 0x04 // le32 RO
	ccDriverFeatureSelect = 0x08 // le32 RW
	ccDriverFeature       = 0x0c // le32 RW
	ccMSIXConfig          = 0x10 // le16 RW
	ccNumQueues           = 0x12 // le16 RO
	ccDeviceStatus        = 0x14 // u8 RW
	ccConfigGeneration    = 0x15 // u8 RO
	ccQueueSelect         = 0x16 // le16 RW
	ccQueueSize           = 0x18 // le16 RW
	ccQueueMSIXVector     = 0x1a // le16 RW
	ccQueueEnable         = 0x1c // le16 RW
	ccQueueNotifyOff      = 0x1e // le16 RO
	ccQueueDesc           = 0x20 // le64 RW
	ccQueueDriver         = 0x28 // le64 RW
	ccQueueDevice         = 0x30 // le64 RW
)

// NoVector is VIRTIO_MSI_NO_VECTOR.
const NoVector = 0xffff

// ISR status bits.
const (
	isrQueue  = 1
	isrConfig = 2
)

// MSI-X capability (after ID and next) and table entry layout.
const (
	msixCapControl  = 0 // le16 message control
	msixCapTable    = 2 // le32 table offset | BIR
	msixCapPBA      = 6 // le32 PBA offset | BIR
	msixCapDataSize = 10

	msixControlEnable   = 1 << 15
	msixControlFuncMask = 1 << 14

	msixEntryAddrLo = 0
	msixEntryAddrHi = 4
	msixEntryData   = 8
	msixEntryCtrl   = 12
	msixCtrlMasked  = 1
)
