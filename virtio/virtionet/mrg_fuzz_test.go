package virtionet

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// FuzzRXMerged input:
//
//	[0]    flags: 1 the frame is a handler reply (never waits), 2 the
//	       chains are split into two descriptors where they can be
//	[1:3]  le16 frame length (taken modulo 4096, at least an Ethernet header)
//	[3:]   one receive chain per le16: its size (modulo 2048; below the
//	       header is a chain the spec forbids), at most mrgFuzzQueue
//
// One frame goes through the MRG_RXBUF delivery into a ring of those
// chains. Whatever the chains, the frame is delivered whole (num_buffers
// entries, every chain but the last full), dropped with nothing published
// or only empty entries, or waits holding chains it can give back; never
// half published.
const mrgFuzzQueue = 16

// mrgSeeds: a frame in one chain, over three (one or two descriptors
// each), waiting for chains (frame and reply), chains below the header
// first and in the middle, a ring too small, header-sized chains.
func mrgSeeds() [][]byte {
	seed := func(flags byte, frame int, chains ...int) []byte {
		b := []byte{flags, 0, 0}
		binary.LittleEndian.PutUint16(b[1:], uint16(frame))
		for _, c := range chains {
			b = binary.LittleEndian.AppendUint16(b, uint16(c))
		}
		return b
	}
	return [][]byte{
		seed(0, 1500, 1530),
		seed(0, 1500, 600, 600, 600),
		seed(2, 1500, 600, 600, 600),
		seed(0, 1500, 600, 600),
		seed(1, 1500, 600, 600),
		seed(0, 1500, 8),
		seed(0, 1500, 600, 11, 600),
		seed(0, 3000, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 100),
		seed(3, 60, 12, 12, 12, 12, 12, 12, 12),
	}
}

func TestRXMergedFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzRXMerged", mrgSeeds())
}

func FuzzRXMerged(f *testing.F) {

	be, _ := rawPair(f, true)
	dev, err := New(Config{Backend: be, MAC: guestMAC[:]})
	if err != nil {
		f.Fatal(err)
	}
	backing := make([]byte, fuzzMem)
	mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: backing})
	if err != nil {
		f.Fatal(err)
	}
	feat := dev.Features()
	pkt := make([]byte, 4096+HeaderLen)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 3 {
			return
		}
		flags := in[0]
		reply := flags&1 != 0
		n := max(int(binary.LittleEndian.Uint16(in[1:]))%4096, EthHeaderLen)
		p := pkt[:HeaderLen+n]
		for i := range p {
			p[i] = byte(i*7 + 1)
		}
		header{}.encode(p, 1)
		clear(backing)
		rxd := testdriver.New(mem, mrgFuzzQueue, 0x1000, fuzzMem, 0)
		q, err := queue.New(mem, rxd.L, virtio.QueueOptions(feat, mrgFuzzQueue))
		if err != nil {
			t.Fatal(err)
		}
		r := newReceiver(dev, q, virtio.Activation{Mem: mem, Features: feat, Interrupt: nopIRQ{}}, guestOffload(feat))
		type posted struct {
			gpa  uint64
			size int
		}
		chains := map[uint16]posted{}
		for c := in[3:]; len(c) >= 2 && rxd.FreeDescriptors() > 0; c = c[2:] {
			size := int(binary.LittleEndian.Uint16(c)) % 2048
			gpa := rxd.Alloc(uint64(size)+1, 16)
			segs := []testdriver.Seg{{Addr: gpa, Len: uint32(size), Write: true}}
			if flags&2 != 0 && size >= 2 && rxd.FreeDescriptors() >= 2 {
				segs = []testdriver.Seg{{Addr: gpa, Len: uint32(size / 2), Write: true}, {Addr: gpa + uint64(size/2), Len: uint32(size - size/2), Write: true}}
			}
			head, _ := rxd.Add(segs...)
			chains[head] = posted{gpa, size}
		}
		before := dev.Counters()
		r.mu.Lock()
		st, err := r.deliverLocked(p, reply)
		r.mu.Unlock()
		if err != nil {
			t.Fatalf("error from well-formed chains: %v", err)
		}
		after := dev.Counters()
		var ents []usedEntry
		for {
			id, l, ok := rxd.Used()
			if !ok {
				break
			}
			ents = append(ents, usedEntry{uint16(id), l})
		}
		switch st {
		case delivered:
			if len(ents) == 0 || after.RxPackets != before.RxPackets+1 {
				t.Fatalf("delivered with %d used entries, counters %+v", len(ents), after)
			}
			var got []byte
			for i, e := range ents {
				c := chains[e.head]
				if i < len(ents)-1 && int(e.len) != c.size || int(e.len) > c.size {
					t.Fatalf("entry %d: %d bytes in a chain of %d", i, e.len, c.size)
				}
				b, _ := mem.Slice(c.gpa, uint64(e.len))
				got = append(got, b...)
			}
			if nb := binary.LittleEndian.Uint16(got[hdrNumBuffers:]); int(nb) != len(ents) {
				t.Fatalf("num_buffers %d with %d entries", nb, len(ents))
			}
			binary.LittleEndian.PutUint16(got[hdrNumBuffers:], 1)
			if !bytes.Equal(got, p) {
				t.Fatal("frame delivered differs")
			}
		case dropped:
			if after.RxDropGuestBuffer != before.RxDropGuestBuffer+1 {
				t.Fatalf("dropped but not counted: %+v", after)
			}
			for _, e := range ents {
				if e.len != 0 {
					t.Fatalf("dropped frame published %v", ents)
				}
			}
			if len(ents) == 0 && q.InFlight() != 0 {
				t.Fatalf("dropped frame holds %d chains", q.InFlight())
			}
			if len(ents) > 0 && chains[ents[len(ents)-1].head].size >= HeaderLen {
				t.Fatalf("empty entries %v without a chain shorter than the header", ents)
			}
		case noBuffers:
			if len(ents) != 0 {
				t.Fatalf("waiting for chains with %v published", ents)
			}
			if reply && q.InFlight() != 0 {
				t.Fatalf("reply left %d chains taken", q.InFlight())
			}
			if !reply && int(q.InFlight()) != len(chains) {
				t.Fatalf("waiting with %d of %d chains taken", q.InFlight(), len(chains))
			}
			r.mu.Lock()
			err := r.unpopMergedLocked()
			r.mu.Unlock()
			if err != nil || q.InFlight() != 0 {
				t.Fatalf("giving back the chains: %v, %d in flight", err, q.InFlight())
			}
		}
	})
}
