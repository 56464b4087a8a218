package boot

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/guestmem"
)

// Intel MultiProcessor Specification 1.4 structures. The floating pointer
// sits at MPTableAddr (the last KiB of base memory, which Linux scans) and
// the configuration table follows it; with many CPUs the table runs on into
// the reserved legacy hole, which is backed by RAM.
const (
	mpFloatSize    = 16
	mpHeaderSize   = 44
	mpCPUSize      = 20
	mpEntrySize    = 8 // bus, IOAPIC, I/O and local interrupt entries
	mpSpecRev      = 4 // MP spec 1.4
	mpLAPICVersion = 0x14
	mpIOAPICVer    = 0x11  // the IOAPIC version KVM's in-kernel IOAPIC reports
	mpCPUSignature = 0x600 // family 6
	mpCPUFeatures  = 0x201 // CPUID.1:EDX FPU | APIC

	mpEntryCPU      = 0
	mpEntryBus      = 1
	mpEntryIOAPIC   = 2
	mpEntryIOIntr   = 3
	mpEntryLocalInt = 4

	mpIntINT    = 0 // vectored interrupt
	mpIntNMI    = 1
	mpIntExtINT = 3 // 8259-style external interrupt

	mpCPUEnabled = 1 << 0
	mpCPUBSP     = 1 << 1

	mpBusPCI = 0 // bus IDs in the table
	mpBusISA = 1

	mpAllLAPICs = 0xff

	// ISAIRQs is the number of legacy ISA IRQs routed through the IOAPIC.
	ISAIRQs = 16
)

// IOAPICID returns the IOAPIC's APIC ID in the MP table and MADT: the first
// ID after the CPUs' (CPU i has APIC ID i).
func IOAPICID(cpus int) uint8 { return uint8(cpus) }

// ISAIRQToGSI returns the IOAPIC pin (GSI) an ISA IRQ is wired to in the MP
// table and MADT: IRQ 0 (the PIT) to pin 2, as on PCs, the others 1:1.
func ISAIRQToGSI(irq uint8) uint32 {
	if irq == 0 {
		return 2
	}
	return uint32(irq)
}

// mpTable returns the floating pointer and configuration table for cpus
// vCPUs, as they go at MPTableAddr.
func mpTable(cpus int) ([]byte, error) {
	if cpus < 1 || cpus > MaxCPUs {
		return nil, fmt.Errorf("%w: %d vCPUs, the MP table holds 1..%d", ErrBadConfig, cpus, MaxCPUs)
	}
	le := binary.LittleEndian
	ioapic := IOAPICID(cpus)
	var e []byte // entries, in the order the spec asks for
	count := 0
	for i := range cpus {
		c := make([]byte, mpCPUSize)
		c[0] = mpEntryCPU
		c[1] = byte(i) // local APIC ID
		c[2] = mpLAPICVersion
		c[3] = mpCPUEnabled
		if i == 0 {
			c[3] |= mpCPUBSP
		}
		le.PutUint32(c[4:], mpCPUSignature)
		le.PutUint32(c[8:], mpCPUFeatures)
		e = append(e, c...)
		count++
	}
	bus := func(id byte, typ string) {
		b := [mpEntrySize]byte{mpEntryBus, id}
		copy(b[2:], fmt.Sprintf("%-6s", typ))
		e = append(e, b[:]...)
		count++
	}
	bus(mpBusPCI, "PCI")
	bus(mpBusISA, "ISA")
	io := [mpEntrySize]byte{mpEntryIOAPIC, ioapic, mpIOAPICVer, 1 /* enabled */}
	le.PutUint32(io[4:], IOAPICAddr)
	e = append(e, io[:]...)
	count++
	intr := func(entry, typ, srcIRQ, dstID, dstPin byte) {
		// flags 0: polarity and trigger conform to the source bus (ISA:
		// active high, edge).
		e = append(e, entry, typ, 0, 0, mpBusISA, srcIRQ, dstID, dstPin)
		count++
	}
	// The 8259 cascade on pin 0, the PIT on pin 2, the rest 1:1. IRQ 2 is
	// the cascade input and has no entry of its own.
	intr(mpEntryIOIntr, mpIntExtINT, 0, ioapic, 0)
	for irq := range uint8(ISAIRQs) {
		if irq == 2 {
			continue
		}
		intr(mpEntryIOIntr, mpIntINT, irq, ioapic, byte(ISAIRQToGSI(irq)))
	}
	intr(mpEntryLocalInt, mpIntExtINT, 0, mpAllLAPICs, 0) // LINT0
	intr(mpEntryLocalInt, mpIntNMI, 0, mpAllLAPICs, 1)    // LINT1

	cfgAddr := uint32(MPTableAddr + mpFloatSize)
	tableLen := mpHeaderSize + len(e)
	if MPTableAddr+mpFloatSize+tableLen > ACPIAddr {
		return nil, fmt.Errorf("boot: MP table of %d bytes for %d vCPUs runs into the ACPI area", tableLen, cpus)
	}
	b := make([]byte, mpFloatSize+tableLen)
	fp := b[:mpFloatSize]
	copy(fp, "_MP_")
	le.PutUint32(fp[4:], cfgAddr)
	fp[8] = 1 // length in 16-byte units
	fp[9] = mpSpecRev
	// Feature bytes 1-5 zero: a configuration table is present; no IMCR
	// (virtual wire mode).
	fp[10] = checksum(fp)

	h := b[mpFloatSize:]
	copy(h[0:], "PCMP")
	le.PutUint16(h[4:], uint16(tableLen))
	h[6] = mpSpecRev
	copy(h[8:16], "CORRAL  ")
	copy(h[16:28], "CORRAL VM   ")
	le.PutUint16(h[34:], uint16(count))
	le.PutUint32(h[36:], LAPICAddr)
	copy(h[mpHeaderSize:], e)
	h[7] = checksum(h[:tableLen])
	return b, nil
}

// writeMPTable writes the MP table for cpus vCPUs at MPTableAddr.
func writeMPTable(mem *guestmem.Memory, cpus int) error {
	b, err := mpTable(cpus)
	if err != nil {
		return err
	}
	if err := mem.WriteAt(b, MPTableAddr); err != nil {
		return fmt.Errorf("boot: writing MP table: %w", err)
	}
	return nil
}

// checksum returns the byte that makes b (with that byte still 0) sum to 0.
func checksum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return -s
}
