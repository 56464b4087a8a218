package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
)

// ACPI power-off. The FADT is hardware-reduced: its sleep control and sleep
// status registers are one byte-wide I/O port, and \_S5 in the DSDT gives
// SLP_TYP 5. To power off, Linux writes ACPISleepStatusWake to the status
// register, then (ACPISleepTypeS5 << ACPISleepTypeShift) | ACPISleepEnable
// (0x34) to the control register; a device there ends the VM on that write.
//
// Port 0x3c0 is free on this machine (no VGA; the FADT says so): it is clear
// of COM1 0x3f8-0x3ff, the RTC 0x70-0x71, the i8042 0x60/0x64, debug-exit
// 0xf4 and PCI configuration 0xcf8-0xcff. Cloud Hypervisor uses the same.
const (
	ACPISleepControlPort = 0x3c0
	ACPISleepStatusPort  = 0x3c0
	ACPISleepTypeS5      = 5      // SLP_TYP for S5 (soft off), as \_S5 says
	ACPISleepTypeShift   = 2      // SLP_TYP is bits 4:2 of the control register
	ACPISleepTypeMask    = 7      // SLP_TYP width mask (after shifting)
	ACPISleepEnable      = 1 << 5 // SLP_EN: enter the sleep state now
	ACPISleepStatusWake  = 1 << 7 // WAK_STS in the status register (write 1 to clear)
)

// IsS5Write reports whether a byte the guest wrote to ACPISleepControlPort
// asks for S5 (power off).
func IsS5Write(v uint8) bool {
	return v&ACPISleepEnable != 0 && v>>ACPISleepTypeShift&ACPISleepTypeMask == ACPISleepTypeS5
}

// ACPI table identity. Nothing in the tables depends on the date.
const (
	acpiOEMID       = "CORRAL"
	acpiOEMTableID  = "CORRALVM"
	acpiOEMRevision = 1
	acpiCreatorID   = "CRRL"
	acpiCreatorRev  = 1
	acpiHeaderSize  = 36
	rsdpSize        = 36

	fadtSize     = 276 // ACPI 6.0+ FADT with the hypervisor vendor identity
	fadtRevision = 6
	fadtMinor    = 0
	madtRevision = 5
	dsdtRevision = 2 // 64-bit AML integers
	xsdtRevision = 1

	// FADT fields.
	fadtDSDTOff         = 40
	fadtCenturyOff      = 108 // CMOS index of the RTC century register
	fadtBootArchOff     = 109
	fadtFlagsOff        = 112
	fadtMinorOff        = 131
	fadtXDSDTOff        = 140
	fadtSleepControlOff = 244
	fadtSleepStatusOff  = 256
	fadtHypervisorOff   = 268

	// rtcCenturyIndex is the CMOS register holding the century, so guests
	// read years past 2099 right.
	rtcCenturyIndex = 0x32

	fadtHWReducedACPI = 1 << 20
	fadtPwrButton     = 1 << 4 // no fixed-feature power button
	fadtSlpButton     = 1 << 5 // no fixed-feature sleep button

	// IA-PC boot architecture flags: an i8042 is present, no VGA, and
	// OSPM must not touch PCIe ASPM. MSI is supported (bit 3 clear) and
	// the CMOS RTC is present (bit 5 clear).
	bootArch8042    = 1 << 1
	bootArchNoVGA   = 1 << 2
	bootArchNoASPM  = 1 << 4
	fadtBootArch    = bootArch8042 | bootArchNoVGA | bootArchNoASPM
	hypervisorVendr = "CORRALVM"

	gasSystemIO = 1 // generic address structure: I/O space
	gasByte     = 1 // access size: byte

	// MADT.
	madtLAPICAddrOff = 36
	madtFlagsOff     = 40
	madtHeaderSize   = 44
	madtLAPIC        = 0 // Processor Local APIC, 8 bytes
	madtIOAPIC       = 1 // I/O APIC, 12 bytes
	madtISO          = 2 // Interrupt Source Override, 10 bytes
	madtLAPICNMI     = 4 // Local APIC NMI, 6 bytes
	madtEnabled      = 1
	madtAllCPUs      = 0xff
	madtNMIHighEdge  = 0x5 // MPS INTI flags: active high, edge
)

// acpiTables returns the ACPI tables for cpus vCPUs as they go at ACPIAddr:
// RSDP, XSDT, FADT, DSDT and MADT, each on a 16-byte boundary.
func acpiTables(cpus int) ([]byte, error) {
	if cpus < 1 || cpus > MaxCPUs {
		return nil, fmt.Errorf("%w: %d vCPUs, the MADT holds 1..%d", ErrBadConfig, cpus, MaxCPUs)
	}
	var out []byte
	place := func(b []byte) uint64 {
		for len(out)%16 != 0 {
			out = append(out, 0)
		}
		addr := uint64(ACPIAddr + len(out))
		out = append(out, b...)
		return addr
	}
	place(make([]byte, rsdpSize)) // filled in last
	dsdt := place(dsdtTable())
	fadt := place(fadtTable(dsdt))
	madt := place(madtTable(cpus))
	xsdt := place(xsdtTable(fadt, madt))
	copy(out, rsdpTable(xsdt))
	if uint64(ACPIAddr+len(out)) > ACPIEnd {
		return nil, fmt.Errorf("boot: ACPI tables of %d bytes overrun [%#x, %#x)", len(out), ACPIAddr, ACPIEnd)
	}
	return out, nil
}

// writeACPI writes the ACPI tables for cpus vCPUs at ACPIAddr.
func writeACPI(mem *guestmem.Memory, cpus int) error {
	b, err := acpiTables(cpus)
	if err != nil {
		return err
	}
	if err := mem.WriteAt(b, ACPIAddr); err != nil {
		return fmt.Errorf("boot: writing ACPI tables: %w", err)
	}
	return nil
}

// sdt returns a system description table: the 36-byte header and body,
// with length and checksum filled in.
func sdt(sig string, rev byte, body []byte) []byte {
	b := make([]byte, acpiHeaderSize, acpiHeaderSize+len(body))
	copy(b[0:4], sig)
	b[8] = rev
	copy(b[10:16], acpiOEMID)
	copy(b[16:24], acpiOEMTableID)
	binary.LittleEndian.PutUint32(b[24:], acpiOEMRevision)
	copy(b[28:32], acpiCreatorID)
	binary.LittleEndian.PutUint32(b[32:], acpiCreatorRev)
	b = append(b, body...)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	b[9] = checksum(b)
	return b
}

// rsdpTable returns the revision-2 RSDP pointing at the XSDT.
func rsdpTable(xsdt uint64) []byte {
	b := make([]byte, rsdpSize)
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], acpiOEMID)
	b[15] = 2 // revision: ACPI 2.0+ (XSDT)
	binary.LittleEndian.PutUint32(b[20:], rsdpSize)
	binary.LittleEndian.PutUint64(b[24:], xsdt)
	b[8] = checksum(b[:20])
	b[32] = checksum(b)
	return b
}

// xsdtTable returns the XSDT listing the given tables.
func xsdtTable(tables ...uint64) []byte {
	var body []byte
	for _, t := range tables {
		body = binary.LittleEndian.AppendUint64(body, t)
	}
	return sdt("XSDT", xsdtRevision, body)
}

// gas encodes a generic address structure for a byte-wide I/O port.
func gas(b []byte, port uint64) {
	b[0] = gasSystemIO
	b[1] = 8 // register bit width
	b[2] = 0 // bit offset
	b[3] = gasByte
	binary.LittleEndian.PutUint64(b[4:], port)
}

// fadtTable returns a hardware-reduced FADT pointing at the DSDT.
func fadtTable(dsdt uint64) []byte {
	body := make([]byte, fadtSize-acpiHeaderSize)
	f := func(off int) []byte { return body[off-acpiHeaderSize:] }
	binary.LittleEndian.PutUint32(f(fadtDSDTOff), uint32(dsdt))
	f(fadtCenturyOff)[0] = rtcCenturyIndex
	binary.LittleEndian.PutUint16(f(fadtBootArchOff), fadtBootArch)
	binary.LittleEndian.PutUint32(f(fadtFlagsOff), fadtHWReducedACPI|fadtPwrButton|fadtSlpButton)
	f(fadtMinorOff)[0] = fadtMinor
	binary.LittleEndian.PutUint64(f(fadtXDSDTOff), dsdt)
	gas(f(fadtSleepControlOff), ACPISleepControlPort)
	gas(f(fadtSleepStatusOff), ACPISleepStatusPort)
	copy(f(fadtHypervisorOff)[:8], hypervisorVendr)
	return sdt("FACP", fadtRevision, body)
}

// madtTable returns the MADT: one enabled local APIC per vCPU (ACPI UID
// and APIC ID = index), the IOAPIC (ID IOAPICID(cpus), GSI base 0), the
// IRQ 0 -> GSI 2 override and NMI on every CPU's LINT1. PCAT_COMPAT is
// off: the FADT is hardware-reduced, so Linux drives no 8259.
func madtTable(cpus int) []byte {
	body := make([]byte, madtHeaderSize-acpiHeaderSize)
	binary.LittleEndian.PutUint32(body[madtLAPICAddrOff-acpiHeaderSize:], LAPICAddr)
	binary.LittleEndian.PutUint32(body[madtFlagsOff-acpiHeaderSize:], 0)
	for i := range cpus {
		body = append(body, madtLAPIC, 8, byte(i), byte(i))
		body = binary.LittleEndian.AppendUint32(body, madtEnabled)
	}
	body = append(body, madtIOAPIC, 12, IOAPICID(cpus), 0)
	body = binary.LittleEndian.AppendUint32(body, IOAPICAddr)
	body = binary.LittleEndian.AppendUint32(body, 0) // GSI base
	body = append(body, madtISO, 10, 0 /* ISA */, 0 /* IRQ 0 */)
	body = binary.LittleEndian.AppendUint32(body, ISAIRQToGSI(0))
	body = binary.LittleEndian.AppendUint16(body, 0) // conforms to the bus: edge, high
	body = append(body, madtLAPICNMI, 6, madtAllCPUs)
	body = binary.LittleEndian.AppendUint16(body, madtNMIHighEdge)
	body = append(body, 1) // LINT1
	return sdt("APIC", madtRevision, body)
}
