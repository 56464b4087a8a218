package boot

// Legacy ISA devices the DSDT describes, at their PC addresses and IRQs.
// Hardware-reduced ACPI makes Linux drop its implicit ISA IRQ mappings
// (no 8259, nr_legacy_irqs() == 0), so a legacy device gets a working
// interrupt only if the DSDT lists it: its IRQ is then registered as GSI
// ISAIRQToGSI(irq). The devices must raise these IRQs.
const (
	com1Port   = 0x3f8
	com1IRQ    = 4
	i8042Data  = 0x60
	i8042Cmd   = 0x64
	i8042IRQ   = 1 // keyboard
	rtcPort    = 0x70
	rtcIRQ     = 8
	pciCfgPort = 0xcf8 // PCI configuration mechanism #1: 0xcf8-0xcff
)

// dsdtTable returns the DSDT: \_S5 for power-off, and under \_SB the PCI
// host bridge PCI0 and the legacy devices COM1, PS2K (i8042) and RTC.
//
// PCI0 decodes bus 0, takes configuration through ports 0xcf8-0xcff and
// forwards the other I/O ports and the 32-bit MMIO hole up to the IOAPIC
// (where BARs go). Without it, Linux in ACPI mode does not scan PCI at all.
// PCI0 has no _PRT: PCI devices should use MSI/MSI-X.
func dsdtTable() []byte {
	pci := amlDevice("PCI0",
		amlName("_HID", amlEISAID("PNP0A03")),
		amlName("_UID", amlInteger(0)),
		amlName("_BBN", amlInteger(0)),
		amlName("_CRS", amlBuffer(resourceTemplate(
			rdWord(rdTypeBus, 0, 0, 0),
			rdIO(pciCfgPort, 8),
			rdWord(rdTypeIO, rdIOEntire, 0, pciCfgPort-1),
			rdWord(rdTypeIO, rdIOEntire, pciCfgPort+8, 0xffff),
			rdDWord(rdTypeMemory, rdMemReadWrite, MMIOBase, IOAPICAddr-1),
		))),
	)
	com1 := amlDevice("COM1",
		amlName("_HID", amlEISAID("PNP0501")),
		amlName("_UID", amlInteger(1)),
		amlName("_CRS", amlBuffer(resourceTemplate(rdIO(com1Port, 8), rdIRQ(com1IRQ)))),
	)
	kbd := amlDevice("PS2K",
		amlName("_HID", amlEISAID("PNP0303")),
		amlName("_CRS", amlBuffer(resourceTemplate(rdIO(i8042Data, 1), rdIO(i8042Cmd, 1), rdIRQ(i8042IRQ)))),
	)
	rtc := amlDevice("RTC_",
		amlName("_HID", amlEISAID("PNP0B00")),
		amlName("_CRS", amlBuffer(resourceTemplate(rdIO(rtcPort, 2), rdIRQ(rtcIRQ)))),
	)
	aml := amlName("_S5_", amlPackage(amlInteger(ACPISleepTypeS5), amlInteger(ACPISleepTypeS5), amlInteger(0), amlInteger(0)))
	aml = append(aml, amlScope("_SB_", pci, com1, kbd, rtc)...)
	return sdt("DSDT", dsdtRevision, aml)
}
