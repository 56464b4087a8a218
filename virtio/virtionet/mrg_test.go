package virtionet

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// rxNextAvail is the receive queue's next avail index, read under the
// receiver's lock (the device's own progress, which no interrupt shows).
func (h *harness) rxNextAvail() uint16 {
	r := h.dev.active.Load().pairs[0].rx
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.q.NextAvail()
}

type usedEntry struct {
	head uint16
	len  uint32
}

// takeUsed waits for n used receive entries and returns them, with the
// bytes each reports.
func (h *harness) takeUsed(n int) ([]usedEntry, [][]byte) {
	h.t.Helper()
	var ents []usedEntry
	var data [][]byte
	h.wait("used receive entries", func() bool {
		for len(ents) < n {
			id, l, ok := h.rxd.Used()
			if !ok {
				return false
			}
			gpa, known := h.rxBufs[uint16(id)]
			if !known {
				h.t.Fatalf("used ring returned unknown head %d", id)
			}
			delete(h.rxBufs, uint16(id))
			b, err := h.mem.Slice(gpa, uint64(l))
			if err != nil {
				h.t.Fatal(err)
			}
			ents = append(ents, usedEntry{uint16(id), l})
			data = append(data, append([]byte(nil), b...))
		}
		return true
	})
	return ents, data
}

// A frame larger than one chain is spread over several; the first chain's
// header says how many, and none is published before the last is filled.
func TestRxMergedSpansChains(t *testing.T) {
	h := newHarness(t, opts{})
	if h.feat&FMrgRxbuf == 0 {
		t.Fatal("MRG_RXBUF not offered")
	}
	const chain = 600
	a := h.postRx(chain, 0)
	b := h.postRx(chain, 250) // a chain of three descriptors
	h.dev.Notify(RxQueue)
	frame := rawFrame(1500, 3)
	h.peerWrite(frame)
	h.poll("both chains taken", func() bool { return h.rxNextAvail() == 2 })
	if h.rxd.UsedIdx() != 0 {
		t.Fatalf("used idx %d with the frame not placed: half a frame published", h.rxd.UsedIdx())
	}
	c := h.postRx(chain, 0)
	h.dev.Notify(RxQueue)
	ents, data := h.takeUsed(3)
	if h.rxd.UsedIdx() != 3 {
		t.Fatalf("used idx %d, want 3", h.rxd.UsedIdx())
	}
	want := []usedEntry{{a, chain}, {b, chain}, {c, HeaderLen + 1500 - 2*chain}}
	for i := range want {
		if ents[i] != want[i] {
			t.Fatalf("used entries %v, want %v", ents, want)
		}
	}
	if nb := binary.LittleEndian.Uint16(data[0][hdrNumBuffers:]); nb != 3 {
		t.Fatalf("num_buffers %d, want 3", nb)
	}
	got := bytes.Join(data, nil)[HeaderLen:]
	if !bytes.Equal(got, frame) {
		t.Fatal("frame spread over the chains differs from the one sent")
	}
	// A frame that fits one chain says num_buffers 1.
	h.postRx(chain, 0)
	h.dev.Notify(RxQueue)
	small := rawFrame(100, 4)
	h.peerWrite(small)
	p := h.takeRx()
	if p.numBuffers != 1 || !bytes.Equal(p.frame, small) {
		t.Fatalf("num_buffers %d, frame %d bytes", p.numBuffers, len(p.frame))
	}
	if c := h.dev.Counters(); c.RxPackets != 2 || c.RxBytes != 1600 || c.RxDropGuestBuffer != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// A chain shorter than the header (the spec forbids it with MRG_RXBUF)
// drops the frame: the chains it had taken go back empty, together, and
// the next frame is delivered normally.
func TestRxMergedChainShorterThanHeader(t *testing.T) {
	h := newHarness(t, opts{})
	for _, first := range []bool{true, false} {
		var heads []uint16
		if !first {
			heads = append(heads, h.postRx(600, 0))
		}
		heads = append(heads, h.postRx(HeaderLen-1, 0))
		h.dev.Notify(RxQueue)
		h.peerWrite(rawFrame(1000, 5))
		ents, _ := h.takeUsed(len(heads))
		for i, e := range ents {
			if e.head != heads[i] || e.len != 0 {
				t.Fatalf("first %v: used entries %v; want heads %v, empty", first, ents, heads)
			}
		}
		h.postRx(1200, 0)
		h.dev.Notify(RxQueue)
		next := rawFrame(900, 6)
		h.peerWrite(next)
		if p := h.takeRx(); !bytes.Equal(p.frame, next) || p.numBuffers != 1 {
			t.Fatalf("first %v: the next frame was not delivered whole", first)
		}
	}
	if c := h.dev.Counters(); c.RxDropGuestBuffer != 2 || c.RxPackets != 2 || c.ProtocolErrors != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// When the chains taken hold every descriptor of the ring and the frame
// still does not fit, the guest can never give more: the frame is dropped
// (not held forever) and the chains are kept for the next frame.
func TestRxMergedTooFewChains(t *testing.T) {
	h := newHarness(t, opts{qsize: 4})
	var heads []uint16
	for range 2 {
		heads = append(heads, h.postRx(100, 50)) // two descriptors each: the ring is full
	}
	h.dev.Notify(RxQueue)
	h.peerWrite(rawFrame(1000, 7))
	h.poll("the frame dropped", func() bool { return h.dev.Counters().RxDropGuestBuffer == 1 })
	if h.rxd.UsedIdx() != 0 {
		t.Fatalf("used idx %d after a dropped frame", h.rxd.UsedIdx())
	}
	small := rawFrame(150, 8) // 162 bytes: both chains
	h.peerWrite(small)
	ents, data := h.takeUsed(2)
	if ents[0].head != heads[0] || ents[1].head != heads[1] {
		t.Fatalf("used %v; want the kept chains %v", ents, heads)
	}
	if got := bytes.Join(data, nil)[HeaderLen:]; !bytes.Equal(got, small) {
		t.Fatal("the next frame differs")
	}
}

// A frame handler's reply spreads over chains too, but never waits: with
// too few chains it is dropped and they stay available.
func TestRxMergedReply(t *testing.T) {
	h := newHarness(t, opts{})
	rx := h.dev.active.Load().pairs[0].rx
	reply := make([]byte, HeaderLen+300)
	copy(reply[HeaderLen:], rawFrame(300, 9))
	header{}.encode(reply, 1)
	first := h.postRx(200, 0)
	rx.deliverReply(reply)
	if c := h.dev.Counters(); c.RxDropReplyNoRoom != 1 || h.rxd.UsedIdx() != 0 {
		t.Fatalf("reply without room: counters %+v, used idx %d", c, h.rxd.UsedIdx())
	}
	h.postRx(200, 0)
	rx.deliverReply(reply)
	ents, data := h.takeUsed(2)
	if ents[0].head != first || ents[0].len != 200 || ents[1].len != 112 {
		t.Fatalf("used %v", ents)
	}
	if binary.LittleEndian.Uint16(data[0][hdrNumBuffers:]) != 2 || !bytes.Equal(bytes.Join(data, nil)[HeaderLen:], reply[HeaderLen:]) {
		t.Fatal("reply not delivered whole over two chains")
	}
}

// Pause with a frame part-placed gives its chains back to the avail ring;
// after Resume the frame is delivered from its first chain on.
func TestPauseReturnsMergedChains(t *testing.T) {
	h := newHarness(t, opts{})
	a := h.postRx(600, 0)
	h.dev.Notify(RxQueue)
	frame := rawFrame(1000, 10)
	h.peerWrite(frame)
	h.poll("the first chain taken", func() bool { return h.rxNextAvail() == 1 })
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if rx, _ := h.inFlight(); rx != 0 {
		t.Fatalf("receive chains in flight after Pause: %d", rx)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	h.postRx(600, 0)
	h.dev.Notify(RxQueue)
	ents, data := h.takeUsed(2)
	if ents[0].head != a || !bytes.Equal(bytes.Join(data, nil)[HeaderLen:], frame) {
		t.Fatalf("used %v: frame not delivered whole from the first chain", ents)
	}
}
