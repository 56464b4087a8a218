package blk

import (
	"bytes"
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

// FuzzBlkBatch input: up to 4 requests, each a le16 length L and then L
// bytes in FuzzBlkRequest's form. The requests are served twice from the
// same image and guest memory: all in one batch (merged where adjacent),
// and one at a time. Both must give the same completions, guest memory
// and image: merging changes nothing the guest can see.
func FuzzBlkBatch(f *testing.F) {
	for _, s := range batchSeeds() {
		f.Add(s)
	}
	orig := pattern(fuzzImage, 0)
	type side struct {
		dev     *Device
		path    string
		backing []byte
		mem     *guestmem.Memory
	}
	var sides [2]*side
	for i := range sides {
		path := tempImage(f, fuzzImage)
		dev, err := Open(Config{Path: path, Serial: "fuzz"})
		if err != nil {
			f.Fatal(err)
		}
		defer dev.Close()
		backing := make([]byte, fuzzMem)
		mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: backing})
		if err != nil {
			f.Fatal(err)
		}
		sides[i] = &side{dev: dev, path: path, backing: backing, mem: mem}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var reqs []fuzzReq
		for len(in) > 2 && len(reqs) < 4 {
			n := min(int(binary.LittleEndian.Uint16(in)), len(in)-2)
			r, ok := parseFuzzRequest(in[2 : 2+n])
			in = in[2+n:]
			if ok {
				reqs = append(reqs, r)
			}
		}
		if len(reqs) == 0 {
			return
		}
		var used [2][]uint32
		var errs [2]error
		var heap uint64 // where the buffers start, past the rings (which differ)
		for i, s := range sides {
			clear(s.backing)
			if err := os.WriteFile(s.path, orig, 0o644); err != nil {
				t.Fatal(err)
			}
			d := testdriver.New(s.mem, 64, 0x1000, fuzzMem, 0)
			heap = d.HeapMark()
			q, err := queue.New(s.mem, d.L, virtio.QueueOptions(s.dev.Features(), 64))
			if err != nil {
				t.Fatal(err)
			}
			w := newWorker(s.dev, 0, q, virtio.Activation{Mem: s.mem, Features: s.dev.Features(), Interrupt: &nopIRQ{}}, nil)
			take := func() {
				for {
					_, n, ok := d.Used()
					if !ok {
						return
					}
					used[i] = append(used[i], n)
				}
			}
			for _, r := range reqs {
				r.lay(d, s.mem)
				if i == 1 && errs[i] == nil { // one at a time, until the queue fails
					errs[i] = w.drain(context.Background())
					take()
				}
			}
			if i == 0 { // one batch
				errs[i] = w.drain(context.Background())
			}
			take()
			if errs[i] != nil && !errors.Is(errs[i], queue.ErrGuest) {
				t.Fatalf("host error from guest requests: %v", errs[i])
			}
		}
		if (errs[0] == nil) != (errs[1] == nil) {
			t.Fatalf("batched: %v; one at a time: %v", errs[0], errs[1])
		}
		if errs[0] == nil && len(used[0]) != len(reqs) {
			t.Fatalf("%d of %d requests completed", len(used[0]), len(reqs))
		}
		if !equalU32(used[0], used[1]) {
			t.Fatalf("used lengths batched %v, one at a time %v", used[0], used[1])
		}
		if !bytes.Equal(sides[0].backing[heap:], sides[1].backing[heap:]) {
			for k := heap; k < fuzzMem; k++ {
				if sides[0].backing[k] != sides[1].backing[k] {
					t.Fatalf("guest memory differs between batched and one at a time at %#x: %#x, %#x (heap %#x)", k, sides[0].backing[k], sides[1].backing[k], heap)
				}
			}
		}
		a, errA := os.ReadFile(sides[0].path)
		b, errB := os.ReadFile(sides[1].path)
		if errA != nil || errB != nil || !bytes.Equal(a, b) || len(a) != fuzzImage {
			t.Fatalf("images differ between batched and one at a time (%v, %v)", errA, errB)
		}
	})
}

func equalU32(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// batchSeeds are batches of FuzzBlkRequest seeds: adjacent reads and
// writes, a write then a read of it, mixed directions, and a broken
// request in the middle, requests with gaps between them.
func batchSeeds() [][]byte {
	s := blkSeeds()
	mk := func(reqs ...[]byte) []byte {
		var b []byte
		for _, r := range reqs {
			b = binary.LittleEndian.AppendUint16(b, uint16(len(r)))
			b = append(b, r...)
		}
		return b
	}
	one := func(typ uint32, sector uint64, n uint16, write bool, payload []byte) []byte {
		b := []byte{16, 0}
		var h [16]byte
		h[0] = byte(typ)
		for i := range 8 {
			h[8+i] = byte(sector >> (8 * i))
		}
		b = append(b, h[:]...)
		w := byte(0)
		if write {
			w = 1
		}
		b = append(b, 1, byte(n), byte(n>>8), w)
		return append(b, payload...)
	}
	return [][]byte{
		mk(one(TypeIn, 0, 1024, true, nil), one(TypeIn, 2, 512, true, nil), one(TypeIn, 3, 4096, true, nil)),
		mk(one(TypeOut, 10, 512, false, pattern(512, 1)), one(TypeOut, 11, 1024, false, pattern(1024, 2)), one(TypeIn, 10, 1536, true, nil)),
		mk(one(TypeIn, 0, 512, true, nil), one(TypeOut, 1, 512, false, pattern(512, 3)), one(TypeIn, 2, 512, true, nil)),
		mk(one(TypeOut, 20, 512, false, pattern(512, 4)), one(TypeFlush, 0, 0, false, nil), one(TypeOut, 21, 512, false, pattern(512, 5))),
		mk(s[0], s[11], s[2]),
		mk(one(TypeIn, 126, 512, true, nil), one(TypeIn, 127, 1024, true, nil)),
		mk(s[2], s[6], s[7], s[5]),
		mk(one(TypeIn, 0, 512, true, nil), one(TypeIn, 4, 512, true, nil), one(TypeIn, 3, 512, true, nil)),
		mk(one(TypeOut, 30, 512, false, pattern(512, 6)), one(TypeOut, 40, 512, false, pattern(512, 7)), one(TypeIn, 30, 6144, true, nil)),
	}
}

func TestBlkBatchFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzBlkBatch", batchSeeds())
}
