package blk

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// FuzzBlkRequest input:
//
//	[0]      header descriptor length (mod 32; 16 is a proper header)
//	[1]      bit 0: use an indirect table; bit 1: leave out the status
//	         byte; bit 2: make the status descriptor device-readable
//	[2:18]   the request header (type, reserved, sector)
//	[18]     number of data segments (mod 9)
//	then 3 bytes per segment: le16 length (mod 8193), flags (bit 0 writable)
//	then the payload copied into the readable data segments
const (
	fzIndirect     = 1
	fzNoStatus     = 2
	fzStatusRdOnly = 4
	fuzzImage      = 64 << 10 // 128 sectors
	fuzzMem        = 256 << 10
)

func FuzzBlkRequest(f *testing.F) {
	for _, s := range blkSeeds() {
		f.Add(s)
	}
	dev, err := Open(Config{Path: tempImage(f, fuzzImage), Serial: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	defer dev.Close()
	backing := make([]byte, fuzzMem)
	mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: backing})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		clear(backing)
		r, ok := parseFuzzRequest(in)
		if !ok {
			return
		}
		d := testdriver.New(mem, 16, 0x1000, fuzzMem, 0)
		q, err := queue.New(mem, d.L, virtio.QueueOptions(dev.Features(), 16))
		if err != nil {
			t.Fatal(err)
		}
		w := newWorker(dev, 0, q, virtio.Activation{Mem: mem, Features: dev.Features(), Interrupt: &nopIRQ{}}, nil)
		statusGPA := r.lay(d, mem)
		err = w.drain(context.Background())
		if err != nil {
			if !errors.Is(err, queue.ErrGuest) {
				t.Fatalf("host error from a guest request: %v", err)
			}
			if _, _, ok := d.Used(); ok {
				t.Fatal("request completed although the device failed")
			}
		} else {
			_, n, ok := d.Used()
			if !ok {
				t.Fatal("request neither completed nor failed the device")
			}
			if n == 0 {
				t.Fatal("completed with used length 0")
			}
			if statusGPA != 0 {
				if b, _ := mem.Slice(statusGPA, 1); b[0] > StatusUnsupp {
					t.Fatalf("status byte %d", b[0])
				}
			}
		}
		if st, err := os.Stat(dev.img.path); err != nil || st.Size() != fuzzImage {
			t.Fatalf("image size changed: %v", err)
		}
	})
}

type fuzzReq struct {
	hdrLen  uint32
	flags   byte
	hdr     []byte
	segs    []testdriver.Seg
	payload []byte
}

func parseFuzzRequest(in []byte) (fuzzReq, bool) {
	if len(in) < 19 {
		return fuzzReq{}, false
	}
	r := fuzzReq{hdrLen: uint32(in[0] % 32), flags: in[1], hdr: in[2:18]}
	n := int(in[18] % 9)
	rest := in[19:]
	for i := 0; i < n && len(rest) >= 3; i++ {
		l := uint32(binary.LittleEndian.Uint16(rest)) % 8193
		r.segs = append(r.segs, testdriver.Seg{Len: l, Write: rest[2]&1 != 0})
		rest = rest[3:]
	}
	r.payload = rest
	return r, true
}

// lay writes the request into guest memory through the mock driver and
// returns the status byte's address (0 if there is none).
func (r fuzzReq) lay(d *testdriver.Driver, mem *guestmem.Memory) uint64 {
	hdr := d.Alloc(32, 16)
	mem.WriteAt(r.hdr, hdr)
	segs := []testdriver.Seg{{Addr: hdr, Len: r.hdrLen}}
	payload := r.payload
	for _, s := range r.segs {
		s.Addr = d.Alloc(uint64(s.Len)+1, 8)
		if !s.Write {
			k := copy(mustSlice(mem, s.Addr, uint64(s.Len)), payload)
			payload = payload[k:]
		}
		segs = append(segs, s)
	}
	var status uint64
	if r.flags&fzNoStatus == 0 {
		status = d.Alloc(1, 1)
		segs = append(segs, testdriver.Seg{Addr: status, Len: 1, Write: r.flags&fzStatusRdOnly == 0})
		if r.flags&fzStatusRdOnly != 0 {
			status = 0
		}
	}
	if r.flags&fzIndirect != 0 {
		d.AddIndirect(segs...)
	} else {
		d.Add(segs...)
	}
	return status
}

func mustSlice(mem *guestmem.Memory, gpa, n uint64) []byte {
	b, err := mem.Slice(gpa, n)
	if err != nil {
		panic(err)
	}
	return b
}

// blkSeeds are well-formed requests of every type plus a few broken ones.
func blkSeeds() [][]byte {
	mk := func(hdrLen, flags byte, typ uint32, sector uint64, segs [][2]uint16, payload []byte) []byte {
		b := []byte{hdrLen, flags}
		var h [16]byte
		binary.LittleEndian.PutUint32(h[0:], typ)
		binary.LittleEndian.PutUint64(h[8:], sector)
		b = append(b, h[:]...)
		b = append(b, byte(len(segs)))
		for _, s := range segs {
			b = binary.LittleEndian.AppendUint16(b, s[0])
			b = append(b, byte(s[1]))
		}
		return append(b, payload...)
	}
	seg := func(sector uint64, num, flags uint32) []byte { return dwzSeg(sector, num, flags) }
	return [][]byte{
		mk(16, 0, TypeIn, 3, [][2]uint16{{4096, 1}}, nil),
		mk(16, fzIndirect, TypeIn, 0, [][2]uint16{{512, 1}, {1024, 1}}, nil),
		mk(16, 0, TypeOut, 8, [][2]uint16{{1024, 0}}, pattern(1024, 1)),
		mk(16, fzIndirect, TypeOut, 127, [][2]uint16{{512, 0}}, pattern(512, 2)),
		mk(16, 0, TypeFlush, 0, nil, nil),
		mk(16, 0, TypeGetID, 0, [][2]uint16{{20, 1}}, nil),
		mk(16, 0, TypeDiscard, 0, [][2]uint16{{16, 0}}, seg(4, 4, 0)),
		mk(16, 0, TypeWriteZeroes, 0, [][2]uint16{{32, 0}}, append(seg(8, 8, 1), seg(100, 2, 0)...)),
		mk(16, 0, TypeIn, 127, [][2]uint16{{1024, 1}}, nil),       // past the end
		mk(16, 0, 77, 0, [][2]uint16{{512, 1}}, nil),              // unknown type
		mk(8, 0, TypeIn, 0, [][2]uint16{{512, 1}}, nil),           // short header
		mk(16, fzNoStatus, TypeIn, 0, [][2]uint16{{512, 1}}, nil), // no status
		mk(16, fzStatusRdOnly, TypeIn, 0, nil, nil),               // readable status
	}
}

func TestBlkFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzBlkRequest", blkSeeds())
}
