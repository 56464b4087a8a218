package virtio9p

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
)

// BenchmarkSequentialRead: 1 MiB Treads through the mock driver, the
// device and hostfs, from a 16 MiB file (in the page cache after the first
// pass), the reply landing in 64 KiB writable segments.
func BenchmarkSequentialRead(b *testing.B) {
	const fileSize, chunk = 16 << 20, 1 << 20
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "big"), make([]byte, fileSize), 0o644); err != nil {
		b.Fatal(err)
	}
	h := newHarness(b, dir, hostfs.Options{ReadOnly: true}, Config{})
	h.version(DefaultMaxMessageSize)
	reply(b, h.do(chain{msg: msg(tTattach, 1, uint32(1), uint32(0xffffffff), "", "", uint32(0)), wlen: 64}))
	reply(b, h.do(chain{msg: msg(tTwalk, 1, uint32(1), uint32(2), uint16(1), "big"), wlen: 64}))
	reply(b, h.do(chain{msg: msg(tTlopen, 1, uint32(2), uint32(0)), wlen: 64}))
	b.SetBytes(chunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		off := uint64(i) * chunk % fileSize
		r := h.do(chain{msg: msg(tTread, 1, uint32(2), off, uint32(chunk)), wlen: chunk + rlerrorLen, wsplit: 64 << 10})
		if r[hdrType] != tRread || binary.LittleEndian.Uint32(r[hdrLen:]) != chunk {
			b.Fatalf("read at %d: type %d", off, r[hdrType])
		}
	}
}
