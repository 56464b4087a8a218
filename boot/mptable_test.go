package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"
)

// mpParsed is what Linux's mpparse takes from an MP table.
type mpParsed struct {
	lapic  uint32
	cpus   []mpCPU
	buses  map[byte]string
	ioapic struct {
		id, ver byte
		addr    uint32
		enabled bool
	}
	ioInts []mpInt
	lInts  []mpInt
}

type mpCPU struct {
	apicID byte
	bsp    bool
}

type mpInt struct{ typ, srcBus, srcIRQ, dstID, dstPin byte }

// parseMP checks an MP table the way Linux's smp_scan_config,
// smp_check_mpc and smp_read_mpc do, and returns its entries.
func parseMP(mem []byte, base uint64) (*mpParsed, error) {
	le := binary.LittleEndian
	fp := mem[:16]
	if string(fp[:4]) != "_MP_" || fp[8] != 1 || (fp[9] != 1 && fp[9] != 4) {
		return nil, fmt.Errorf("floating pointer header % x", fp)
	}
	if sum(fp) != 0 {
		return nil, errors.New("floating pointer checksum")
	}
	if fp[11] != 0 {
		return nil, fmt.Errorf("feature1 %d: default configuration instead of a table", fp[11])
	}
	off := uint64(le.Uint32(fp[4:])) - base
	if off > uint64(len(mem))-44 {
		return nil, fmt.Errorf("config table pointer %#x outside the table", le.Uint32(fp[4:]))
	}
	h := mem[off:]
	length := int(le.Uint16(h[4:]))
	if string(h[:4]) != "PCMP" || length > len(h) || (h[6] != 1 && h[6] != 4) {
		return nil, fmt.Errorf("config header % x", h[:8])
	}
	if sum(h[:length]) != 0 {
		return nil, errors.New("config table checksum")
	}
	p := &mpParsed{lapic: le.Uint32(h[36:]), buses: map[byte]string{}}
	if p.lapic == 0 {
		return nil, errors.New("NULL local APIC address")
	}
	count := 0
	for e := h[44:length]; len(e) > 0; count++ {
		switch e[0] {
		case 0:
			if len(e) < 20 {
				return nil, errors.New("short processor entry")
			}
			if e[3]&1 != 0 {
				p.cpus = append(p.cpus, mpCPU{e[1], e[3]&2 != 0})
			}
			e = e[20:]
			continue
		case 1:
			p.buses[e[1]] = string(e[2:8])
		case 2:
			p.ioapic.id, p.ioapic.ver, p.ioapic.enabled, p.ioapic.addr = e[1], e[2], e[3]&1 != 0, le.Uint32(e[4:])
		case 3:
			p.ioInts = append(p.ioInts, mpInt{e[1], e[4], e[5], e[6], e[7]})
		case 4:
			p.lInts = append(p.lInts, mpInt{e[1], e[4], e[5], e[6], e[7]})
		default:
			return nil, fmt.Errorf("unknown entry type %d", e[0])
		}
		if len(e) < 8 {
			return nil, errors.New("short entry")
		}
		e = e[8:]
	}
	if count != int(le.Uint16(h[34:])) {
		return nil, fmt.Errorf("entry count %d, header says %d", count, le.Uint16(h[34:]))
	}
	return p, nil
}

func sum(b []byte) byte {
	var s byte
	for _, v := range b {
		s += v
	}
	return s
}

func TestMPTable(t *testing.T) {
	for _, cpus := range []int{1, 2, 7, 64, MaxCPUs} {
		t.Run(fmt.Sprint(cpus), func(t *testing.T) {
			mem := newMem(t, 16<<20)
			if err := writeMPTable(mem, cpus); err != nil {
				t.Fatal(err)
			}
			// Linux finds the floating pointer by scanning the last
			// KiB of base memory on 16-byte boundaries.
			scan := mustRead(t, mem, 639*0x400, 0x400)
			found := -1
			for i := 0; i < len(scan); i += 16 {
				if string(scan[i:i+4]) == "_MP_" {
					found = i
					break
				}
			}
			if found != 0 {
				t.Fatalf("floating pointer at offset %d of the 639K scan window, want 0", found)
			}
			p, err := parseMP(mustRead(t, mem, MPTableAddr, ACPIAddr-MPTableAddr), MPTableAddr)
			if err != nil {
				t.Fatal(err)
			}
			if p.lapic != LAPICAddr || len(p.cpus) != cpus {
				t.Fatalf("lapic %#x, %d CPUs", p.lapic, len(p.cpus))
			}
			for i, c := range p.cpus {
				if c.apicID != byte(i) || c.bsp != (i == 0) {
					t.Errorf("cpu %d: %+v", i, c)
				}
			}
			if p.buses[0] != "PCI   " || p.buses[1] != "ISA   " {
				t.Errorf("buses %q", p.buses)
			}
			if p.ioapic.id != byte(cpus) || p.ioapic.ver != 0x11 || !p.ioapic.enabled || p.ioapic.addr != IOAPICAddr {
				t.Errorf("ioapic %+v", p.ioapic)
			}
			pins := map[byte]byte{} // ISA IRQ -> pin for INT entries
			for _, in := range p.ioInts {
				if in.srcBus != mpBusISA || in.dstID != byte(cpus) {
					t.Errorf("I/O interrupt %+v not from ISA to the IOAPIC", in)
				}
				switch in.typ {
				case mpIntINT:
					pins[in.srcIRQ] = in.dstPin
				case mpIntExtINT:
					if in.dstPin != 0 {
						t.Errorf("ExtINT on pin %d, want 0", in.dstPin)
					}
				default:
					t.Errorf("I/O interrupt type %d", in.typ)
				}
			}
			for irq := byte(0); irq < 16; irq++ {
				want, ok := byte(ISAIRQToGSI(irq)), irq != 2
				if got, has := pins[irq]; has != ok || (ok && got != want) {
					t.Errorf("ISA IRQ %d -> pin %d (present %v), want %d (present %v)", irq, got, has, want, ok)
				}
			}
			if len(p.lInts) != 2 || p.lInts[0] != (mpInt{mpIntExtINT, 1, 0, 0xff, 0}) || p.lInts[1] != (mpInt{mpIntNMI, 1, 0, 0xff, 1}) {
				t.Errorf("local interrupts %+v", p.lInts)
			}
		})
	}
	for _, bad := range []int{0, -1, MaxCPUs + 1} {
		if _, err := mpTable(bad); !errors.Is(err, ErrBadConfig) {
			t.Errorf("mpTable(%d): %v", bad, err)
		}
	}
}
