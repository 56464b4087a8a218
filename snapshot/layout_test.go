package snapshot

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestParseLayoutRejects(t *testing.T) {
	good := &layout{fileSize: 6<<20 + 4096, regions: []memRegion{
		{gpa: 0, size: 2 << 20, offset: 2 << 20, chunks: []chunk{{crc: 7}}},
		{gpa: 1 << 32, size: 4096, offset: 6 << 20, chunks: []chunk{{zero: true}}},
	}}
	enc := encodeLayout(good)
	if _, err := parseLayout(enc); err != nil {
		t.Fatalf("good layout: %v", err)
	}
	reg := func(i, field int) int { return layHdrSize + i*regEntSize + field }
	chk := layHdrSize + 2*regEntSize
	u64 := func(off int, v uint64) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint64(b[off:], v); return b }
	}
	u32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return b }
	}
	for _, c := range []struct {
		name string
		edit func([]byte) []byte
		want string
	}{
		{"chunk size", u32(layChunkSize, 4096), "chunk size 4096, want 2097152"},
		{"no regions", u32(layRegions, 0), "region count 0"},
		{"too many regions", u32(layRegions, 65), "region count 65"},
		{"reserved", u64(reg(1, regReserved), 1), "region 1: reserved field is 0x1"},
		{"odd size", u64(reg(0, regSize), 4095), "region 0 at 0x0: size 0xfff is not a multiple"},
		{"unaligned gpa", u64(reg(1, regGPA), 1<<32+1), "guest address 0x100000001 is not page aligned"},
		{"wraps", u64(reg(1, regGPA), ^uint64(0)-4095), "wraps the address space"},
		{"overlap", u64(reg(1, regGPA), 1<<20), "region 1 at 0x100000: not above the previous region's end 0x200000"},
		{"file overlap", u64(reg(1, regOffset), 3<<20), "file offset 0x300000 is not page aligned at or after 0x400000"},
		{"over header", u64(reg(0, regOffset), 0), "file offset 0x0 is not page aligned at or after 0x20"},
		{"file size", u64(layFileSize, 1000), "memory file size 1000, the last region ends at 6295552"},
		{"short", func(b []byte) []byte { return b[:len(b)-1] }, "length 111 bytes, 2 regions of 2 chunks need 112"},
		{"long", func(b []byte) []byte { return append(b, 0) }, "length 113 bytes"},
		{"flags", u32(chk+chkFlags, 2), "chunk at guest address 0x0: flags 0x2"},
		{"zero with crc", u32(chk+chkEntSize+chkCRC, 9), "chunk at guest address 0x100000000: flags 0x1 with checksum 0x9"},
	} {
		b := c.edit(append([]byte(nil), enc...))
		_, err := parseLayout(b)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}
