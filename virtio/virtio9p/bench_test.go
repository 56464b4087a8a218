package virtio9p

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// BenchmarkSequentialRead: Treads through the mock driver, the device and
// hostfs, from a 16 MiB file (in the page cache after the first pass), one
// at a time as the guest's dd gives them. Layouts: 1 MiB into 64 KiB
// writable segments; and Linux's zero-copy read at its largest msize
// (512000): the 11-byte reply header in its own buffer, the data in 4 KiB
// pages (the user pages the guest's client pins). Only the reply's header
// is checked: copying the data out would be the harness's cost, not the
// device's.
func BenchmarkSequentialRead(b *testing.B) {
	const fileSize = 16 << 20
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, fileSize), 0o644); err != nil {
		b.Fatal(err)
	}
	for _, l := range []struct {
		name   string
		count  uint32
		hdrBuf bool // the header in its own 11-byte buffer
		wsplit int
	}{
		{"1MiB-64KiB-segments", 1 << 20, false, 64 << 10},
		{"zero-copy-500KB-pages", 512000 - 24, true, 4096},
	} {
		b.Run(l.name, func(b *testing.B) {
			h := newHarness(b, dir, hostfs.Options{ReadOnly: true}, Config{})
			h.version(DefaultMaxMessageSize)
			reply(b, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64}))
			reply(b, h.do(chain{msg: msg(tTwalk, 1, uint32(1), uint32(2), uint16(1), "big"), wlen: 64}))
			reply(b, h.do(chain{msg: msg(tTlopen, 1, uint32(2), uint32(0)), wlen: 64}))
			b.SetBytes(int64(l.count))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				off := uint64(i) * uint64(l.count) % (fileSize - uint64(l.count))
				n := h.readInto(msg(tTread, 1, uint32(2), off, l.count), l.count, l.hdrBuf, l.wsplit)
				if n != l.count {
					b.Fatalf("read at %d: %d bytes, want %d", off, n, l.count)
				}
			}
		})
	}
}

// readInto runs one Tread whose reply lands in count bytes past the
// header, laid out as submitRead does, and returns the Rread's count;
// anything but an Rread fails the benchmark.
func (h *harness) readInto(m []byte, count uint32, hdrBuf bool, wsplit int) uint32 {
	h.t.Helper()
	w := h.submitRead(m, int(count)+rlerrorLen, hdrBuf, wsplit)
	h.dev.Notify(0)
	h.wait()
	var hdr [rlerrorLen]byte
	if err := h.mem.ReadAt(hdr[:], w); err != nil {
		h.t.Fatal(err)
	}
	if hdr[hdrType] != tRread {
		h.t.Fatalf("reply type %d, want Rread", hdr[hdrType])
	}
	return binary.LittleEndian.Uint32(hdr[hdrLen:])
}
