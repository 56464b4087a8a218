package boot

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/internal/testenv"
)

// acpiParsed holds the tables found from the RSDP.
type acpiParsed map[string][]byte

// parseACPI follows RSDP -> XSDT -> tables (and FADT -> DSDT) in guest
// memory, checking signatures, revisions, lengths and checksums.
func parseACPI(t *testing.T, read func(addr, n uint64) []byte) acpiParsed {
	t.Helper()
	le := binary.LittleEndian
	rsdp := read(ACPIAddr, 36)
	if string(rsdp[:8]) != "RSD PTR " || rsdp[15] != 2 || le.Uint32(rsdp[20:]) != 36 {
		t.Fatalf("RSDP % x", rsdp)
	}
	if sum(rsdp[:20]) != 0 || sum(rsdp) != 0 {
		t.Fatal("RSDP checksums")
	}
	table := func(addr uint64, sig string) []byte {
		h := read(addr, 36)
		n := le.Uint32(h[4:])
		if string(h[:4]) != sig || n < 36 || n > ACPIEnd-ACPIAddr {
			t.Fatalf("table at %#x: signature %q length %d, want %q", addr, h[:4], n, sig)
		}
		b := read(addr, uint64(n))
		if sum(b) != 0 {
			t.Fatalf("%s checksum", sig)
		}
		if string(b[10:16]) != "CORRAL" {
			t.Errorf("%s OEM ID %q", sig, b[10:16])
		}
		return b
	}
	xsdt := table(le.Uint64(rsdp[24:]), "XSDT")
	out := acpiParsed{"XSDT": xsdt}
	for e := xsdt[36:]; len(e) >= 8; e = e[8:] {
		addr := le.Uint64(e)
		sig := string(read(addr, 4))
		out[sig] = table(addr, sig)
	}
	fadt := out["FACP"]
	if fadt == nil {
		t.Fatal("no FADT in the XSDT")
	}
	dsdt := le.Uint64(fadt[fadtXDSDTOff:])
	if uint64(le.Uint32(fadt[fadtDSDTOff:])) != dsdt {
		t.Error("FADT DSDT and X_DSDT differ")
	}
	out["DSDT"] = table(dsdt, "DSDT")
	return out
}

func TestACPITables(t *testing.T) {
	for _, cpus := range []int{1, 5, MaxCPUs} {
		t.Run(fmt.Sprint(cpus), func(t *testing.T) {
			mem := newMem(t, 16<<20)
			if err := writeACPI(mem, cpus); err != nil {
				t.Fatal(err)
			}
			tables := parseACPI(t, func(a, n uint64) []byte { return mustRead(t, mem, a, n) })
			if len(tables) != 4 {
				t.Errorf("tables %d, want XSDT, FACP, APIC, DSDT", len(tables))
			}
			checkFADT(t, tables["FACP"])
			checkMADT(t, tables["APIC"], cpus)
			checkDSDT(t, tables["DSDT"])
		})
	}
}

func checkFADT(t *testing.T, f []byte) {
	le := binary.LittleEndian
	if len(f) != 276 || f[8] != 6 || f[fadtMinorOff] != 0 {
		t.Errorf("FADT length %d revision %d.%d, want 276 bytes, 6.0", len(f), f[8], f[fadtMinorOff])
	}
	if f[fadtCenturyOff] != 0x32 {
		t.Errorf("FADT CENTURY = %#x, want the RTC's century register 0x32", f[fadtCenturyOff])
	}
	if flags := le.Uint32(f[fadtFlagsOff:]); flags&(1<<20) == 0 {
		t.Errorf("FADT flags %#x lack HW_REDUCED_ACPI", flags)
	}
	if arch := le.Uint16(f[fadtBootArchOff:]); arch&(1<<3) != 0 || arch&(1<<1) == 0 {
		t.Errorf("IAPC_BOOT_ARCH %#x: MSI must stay allowed, i8042 present", arch)
	}
	for _, off := range []int{fadtSleepControlOff, fadtSleepStatusOff} {
		g := f[off : off+12]
		if g[0] != 1 || g[1] != 8 || g[2] != 0 || g[3] != 1 || le.Uint64(g[4:]) != ACPISleepControlPort {
			t.Errorf("sleep register GAS at %d: % x", off, g)
		}
	}
	if string(f[fadtHypervisorOff:]) != "CORRALVM" {
		t.Errorf("hypervisor vendor %q", f[fadtHypervisorOff:])
	}
}

func checkMADT(t *testing.T, m []byte, cpus int) {
	le := binary.LittleEndian
	if le.Uint32(m[36:]) != LAPICAddr || le.Uint32(m[40:]) != 0 {
		t.Errorf("MADT LAPIC %#x flags %#x", le.Uint32(m[36:]), le.Uint32(m[40:]))
	}
	var lapics, ioapics, isos, nmis int
	for e := m[44:]; len(e) > 0; e = e[e[1]:] {
		if len(e) < 2 || e[1] < 2 || int(e[1]) > len(e) {
			t.Fatalf("MADT entry length broken at % x", e[:min(len(e), 4)])
		}
		switch e[0] {
		case 0:
			if e[1] != 8 || e[2] != byte(lapics) || e[3] != byte(lapics) || le.Uint32(e[4:]) != 1 {
				t.Errorf("LAPIC entry % x", e[:8])
			}
			lapics++
		case 1:
			if e[1] != 12 || e[2] != byte(cpus) || le.Uint32(e[4:]) != IOAPICAddr || le.Uint32(e[8:]) != 0 {
				t.Errorf("IOAPIC entry % x", e[:12])
			}
			ioapics++
		case 2:
			if e[1] != 10 || e[2] != 0 || e[3] != 0 || le.Uint32(e[4:]) != 2 || le.Uint16(e[8:]) != 0 {
				t.Errorf("override entry % x, want ISA IRQ 0 -> GSI 2", e[:10])
			}
			isos++
		case 4:
			if e[1] != 6 || e[2] != 0xff || e[5] != 1 {
				t.Errorf("LAPIC NMI entry % x", e[:6])
			}
			nmis++
		default:
			t.Errorf("unexpected MADT entry type %d", e[0])
		}
	}
	if lapics != cpus || ioapics != 1 || isos != 1 || nmis != 1 {
		t.Errorf("MADT: %d LAPICs, %d IOAPICs, %d overrides, %d NMIs", lapics, ioapics, isos, nmis)
	}
}

func checkDSDT(t *testing.T, d []byte) {
	aml := d[36:]
	s5 := []byte{0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00}
	if !bytes.HasPrefix(aml, s5) {
		t.Errorf("DSDT does not start with Name(_S5_, Package(){5, 5, 0, 0}): % x", aml[:min(len(aml), 16)])
	}
	scope := aml[len(s5):]
	if len(scope) < 8 || scope[0] != 0x10 {
		t.Fatalf("no Scope after _S5_: % x", scope[:min(len(scope), 8)])
	}
	n, size := decodePkgLength(scope[1:])
	if n != len(scope)-1 || string(scope[1+size:1+size+4]) != "_SB_" {
		t.Fatalf("Scope PkgLength %d, %d bytes follow; name %q", n, len(scope)-1, scope[1+size:1+size+4])
	}
	// The scope holds Devices only; each PkgLength must tile it exactly.
	hids := map[string][]byte{
		"PCI0": {0x41, 0xd0, 0x0a, 0x03}, // PNP0A03
		"COM1": {0x41, 0xd0, 0x05, 0x01}, // PNP0501
		"PS2K": {0x41, 0xd0, 0x03, 0x03}, // PNP0303
		"RTC_": {0x41, 0xd0, 0x0b, 0x00}, // PNP0B00
	}
	var names []string
	for dev := scope[1+size+4:]; len(dev) > 0; {
		if len(dev) < 8 || dev[0] != 0x5b || dev[1] != 0x82 {
			t.Fatalf("expected a Device: % x", dev[:min(len(dev), 4)])
		}
		n, size := decodePkgLength(dev[2:])
		if 2+n > len(dev) {
			t.Fatalf("Device PkgLength %d past the scope", n)
		}
		body, name := dev[2+size:2+n], string(dev[2+size:2+size+4])
		names = append(names, name)
		hid := append([]byte{0x08, '_', 'H', 'I', 'D', 0x0c}, hids[name]...)
		if !bytes.Contains(body, hid) {
			t.Errorf("device %s lacks its _HID % x", name, hids[name])
		}
		dev = dev[2+n:]
	}
	if strings.Join(names, " ") != "PCI0 COM1 PS2K RTC_" {
		t.Errorf("devices %q", names)
	}
}

// decodePkgLength returns the package length and its encoding's size.
func decodePkgLength(b []byte) (n, size int) {
	size = int(b[0]>>6) + 1
	if size == 1 {
		return int(b[0] & 0x3f), 1
	}
	n = int(b[0] & 0xf)
	for i := 1; i < size; i++ {
		n |= int(b[i]) << (4 + 8*(i-1))
	}
	return n, size
}

func TestAMLPkgLength(t *testing.T) {
	for _, n := range []int{0, 1, 0x3e, 0x3f, 0x40, 0xffd, 0xffe, 0xfffff, 0x100000, 0xffffffb} {
		enc := amlPkgLength(n)
		got, size := decodePkgLength(enc)
		if size != len(enc) || got != n+size {
			t.Errorf("amlPkgLength(%d) = % x decodes to %d (%d bytes)", n, enc, got, size)
		}
	}
	if got := amlEISAID("PNP0A03"); !bytes.Equal(got, []byte{0x0c, 0x41, 0xd0, 0x0a, 0x03}) {
		t.Errorf("EISAID(PNP0A03) = % x", got)
	}
	for v, want := range map[uint64][]byte{0: {0}, 1: {1}, 5: {0x0a, 5}, 0x1234: {0x0b, 0x34, 0x12}, 0xc0000000: {0x0c, 0, 0, 0, 0xc0}} {
		if got := amlInteger(v); !bytes.Equal(got, want) {
			t.Errorf("amlInteger(%#x) = % x, want % x", v, got, want)
		}
	}
}

func TestIsS5Write(t *testing.T) {
	if !IsS5Write(0x34) {
		t.Error("0x34 (SLP_TYP 5 | SLP_EN), what Linux writes for S5, not recognised")
	}
	for _, v := range []uint8{0x14, 0x80, 0x00, 0x30, 0x3c, 0x24} {
		if IsS5Write(v) {
			t.Errorf("IsS5Write(%#x) = true", v)
		}
	}
}

// TestACPIDisassembles runs iasl -d over each table: the ACPICA
// disassembler must accept them without errors or warnings.
func TestACPIDisassembles(t *testing.T) {
	iasl := testenv.MustHaveCommand(t, "iasl", "acpica-tools")
	b, err := acpiTables(4)
	if err != nil {
		t.Fatal(err)
	}
	tables := parseACPI(t, func(a, n uint64) []byte { return b[a-ACPIAddr : a-ACPIAddr+n] })
	dir := t.TempDir()
	for sig, tb := range tables {
		path := filepath.Join(dir, strings.ToLower(sig)+".dat")
		if err := os.WriteFile(path, tb, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(iasl, "-d", path)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("iasl -d %s: %v\n%s", sig, err, out)
			continue
		}
		dsl, err := os.ReadFile(strings.TrimSuffix(path, ".dat") + ".dsl")
		if err != nil {
			t.Errorf("iasl -d %s wrote no .dsl: %v\n%s", sig, err, out)
			continue
		}
		for _, bad := range []string{"Error", "Warning", "Invalid", "Unknown"} {
			if bytes.Contains(out, []byte(bad)) || bytes.Contains(dsl, []byte(bad)) {
				t.Errorf("iasl -d %s reports %q:\n%s\n%s", sig, bad, out, dsl)
				break
			}
		}
		if testing.Verbose() {
			t.Logf("%s:\n%s", sig, dsl)
		}
		if sig != "DSDT" {
			continue
		}
		// Recompile the disassembly: iasl must produce our AML byte for
		// byte (only the header's compiler ID and checksum differ).
		cmd = exec.Command(iasl, "-p", "recompiled", strings.ToLower(sig)+".dsl")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("iasl recompiling the DSDT: %v\n%s", err, out)
			continue
		}
		aml, err := os.ReadFile(filepath.Join(dir, "recompiled.aml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(aml[36:], tb[36:]) {
			t.Errorf("recompiled DSDT body differs:\n ours % x\niasl % x", tb[36:], aml[36:])
		}
	}
}
