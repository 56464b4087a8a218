package boot

import (
	"encoding/binary"
	"testing"
)

func TestGDTDescriptors(t *testing.T) {
	// The encodings Linux itself uses for flat segments
	// (GDT_ENTRY(0xc09b, 0, 0xfffff) and friends).
	want := [gdtEntries]uint64{0, 0x00cf9b000000ffff, 0x00af9b000000ffff, 0x00cf93000000ffff}
	if got := gdt(); got != want {
		t.Fatalf("gdt() = %#x, want %#x", got, want)
	}
	mem := newMem(t, 16<<20)
	if err := mem.PutUint64(IDTAddr, 0x1234); err != nil {
		t.Fatal(err)
	}
	if err := writeGDT(mem); err != nil {
		t.Fatal(err)
	}
	b := mustRead(t, mem, GDTAddr, gdtLimit+1)
	for i, w := range want {
		if d := binary.LittleEndian.Uint64(b[i*8:]); d != w {
			t.Errorf("GDT[%d] in memory = %#x, want %#x", i, d, w)
		}
	}
	if v, _ := mem.Uint64(IDTAddr); v != 0 {
		t.Errorf("IDT gate %#x, want empty", v)
	}
}

func TestSegmentDecode(t *testing.T) {
	code64 := segmentFor(SelectorCode64)
	if (code64 != Segment{Limit: 0xffffffff, Selector: 0x10, Type: 0xb, Present: true, S: true, L: true, G: true}) {
		t.Errorf("code64 %+v", code64)
	}
	code32 := segmentFor(SelectorCode32)
	if (code32 != Segment{Limit: 0xffffffff, Selector: 0x08, Type: 0xb, Present: true, S: true, DB: true, G: true}) {
		t.Errorf("code32 %+v", code32)
	}
	data := segmentFor(SelectorData)
	if (data != Segment{Limit: 0xffffffff, Selector: 0x18, Type: 0x3, Present: true, S: true, DB: true, G: true}) {
		t.Errorf("data %+v", data)
	}
	// A descriptor with every field distinct survives encode and decode.
	d := descriptor(0x12345678, 0xabcde, 0xe9, 0x1)
	got := decodeDescriptor(0x2b, d)
	want := Segment{Base: 0x12345678, Limit: 0xabcde, Selector: 0x2b, Type: 0x9, Present: true, DPL: 3, AVL: true}
	if got != want {
		t.Errorf("decode(%#x) = %+v, want %+v", d, got, want)
	}
}
