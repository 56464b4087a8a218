package guestmem

import (
	"errors"
	"testing"
)

func testMemory(t *testing.T) *Memory {
	t.Helper()
	m, err := New(Region{GPA: 0x1000, Data: make([]byte, 0x1000)}, Region{GPA: 0x10000, Data: make([]byte, 0x100)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSliceBounds(t *testing.T) {
	m := testMemory(t)
	cases := []struct {
		gpa, n uint64
		ok     bool
	}{
		{0x1000, 0x1000, true},
		{0x1fff, 1, true},
		{0x1fff, 2, false},     // crosses the end of region 1
		{0x0, 1, false},        // below RAM
		{0x3000, 1, false},     // in the hole
		{0x10000, 0x100, true}, // whole region 2
		{0x100ff, 2, false},    // past RAM
		{^uint64(0), 2, false}, // wraps
		{0x1000, ^uint64(0), false},
	}
	for _, c := range cases {
		_, err := m.Slice(c.gpa, c.n)
		if (err == nil) != c.ok {
			t.Errorf("Slice(%#x, %#x): err=%v, want ok=%v", c.gpa, c.n, err, c.ok)
		}
		if err != nil && !errors.Is(err, ErrOutOfBounds) {
			t.Errorf("Slice(%#x, %#x): error %v does not wrap ErrOutOfBounds", c.gpa, c.n, err)
		}
	}
}

func TestReadWriteIntegers(t *testing.T) {
	m := testMemory(t)
	if err := m.PutUint64(0x1008, 0x1122334455667788); err != nil {
		t.Fatal(err)
	}
	if v, _ := m.Uint32(0x1008); v != 0x55667788 {
		t.Errorf("Uint32 = %#x", v)
	}
	if v, _ := m.Uint16(0x100e); v != 0x1122 {
		t.Errorf("Uint16 = %#x", v)
	}
	if err := m.StoreUint16Release(0x1010, 0xbeef); err != nil {
		t.Fatal(err)
	}
	if v, err := m.LoadUint16Acquire(0x1010); err != nil || v != 0xbeef {
		t.Errorf("LoadUint16Acquire = %#x, %v", v, err)
	}
	if _, err := m.LoadUint16Acquire(0x1011); err == nil {
		t.Error("unaligned atomic load accepted")
	}
	if err := m.PutUint32(0x1ffe, 1); err == nil {
		t.Error("write across the region end accepted")
	}
}

func TestNewRejectsOverlap(t *testing.T) {
	_, err := New(Region{GPA: 0, Data: make([]byte, 0x2000)}, Region{GPA: 0x1000, Data: make([]byte, 0x10)})
	if err == nil {
		t.Fatal("overlapping regions accepted")
	}
	if _, err := New(Region{GPA: ^uint64(0) - 4, Data: make([]byte, 0x10)}); err == nil {
		t.Fatal("wrapping region accepted")
	}
}

func TestAllocateClose(t *testing.T) {
	m, err := Allocate(Range{GPA: 0, Size: 1 << 20}, Range{GPA: 1 << 32, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if m.Size() != 2<<20 {
		t.Errorf("Size = %d", m.Size())
	}
	if err := m.PutUint32(1<<32+16, 7); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Allocate(Range{GPA: 0, Size: 100}); err == nil {
		t.Error("non-page-multiple size accepted")
	}
}

func BenchmarkSlice(b *testing.B) {
	m, err := New(Region{GPA: 0, Data: make([]byte, 1<<20)}, Region{GPA: 4 << 30, Data: make([]byte, 1<<20)})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.Slice(0x1000, 16); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Slice(4<<30+0x2000, 16); err != nil {
			b.Fatal(err)
		}
	}
}
