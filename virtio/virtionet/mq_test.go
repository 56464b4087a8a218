package virtionet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// pairRx posts one receive buffer of size bytes on pair i's receive queue
// and kicks it; it returns the buffer's address.
func (h *harness) pairRx(i, size int) uint64 {
	h.t.Helper()
	d := h.rxq[i]
	gpa := d.Alloc(uint64(size), 16)
	if err := h.mem.Zero(gpa, uint64(size)); err != nil {
		h.t.Fatal(err)
	}
	if _, ok := d.Add(testdriver.Seg{Addr: gpa, Len: uint32(size), Write: true}); !ok {
		h.t.Fatalf("pair %d receive queue full", i)
	}
	h.dev.Notify(2 * i)
	return gpa
}

// pairTakeRx waits for pair i's receive queue to return the buffer at gpa
// and returns the frame in it.
func (h *harness) pairTakeRx(i int, gpa uint64) []byte {
	h.t.Helper()
	var frame []byte
	h.wait("a frame on pair "+string(rune('0'+i)), func() bool {
		_, n, ok := h.rxq[i].Used()
		if !ok {
			return false
		}
		b := make([]byte, n)
		h.mem.ReadAt(b, gpa)
		frame = b[HeaderLen:]
		return true
	})
	return frame
}

// pairTx queues one frame (zero header) on pair i's transmit queue and
// kicks it.
func (h *harness) pairTx(i int, frame []byte) {
	h.t.Helper()
	d := h.txq[i]
	pkt := append(make([]byte, HeaderLen), frame...)
	gpa := d.Alloc(uint64(len(pkt)), 16)
	h.mem.WriteAt(pkt, gpa)
	if _, ok := d.Add(testdriver.Seg{Addr: gpa, Len: uint32(len(pkt))}); !ok {
		h.t.Fatalf("pair %d transmit queue full", i)
	}
	h.dev.Notify(2*i + 1)
}

// peerReadQ returns the next frame the device wrote to backend queue i.
func (h *harness) peerReadQ(i int) ([]byte, error) {
	buf := make([]byte, HeaderLen+MaxFrameLen)
	p := h.mq.peers[i]
	p.SetReadDeadline(time.Now().Add(waitTime))
	n, err := p.Read(buf)
	return buf[:n], err
}

func (h *harness) setPairs(n uint16) byte {
	h.t.Helper()
	return h.ctrlCmd(ctrlClassMQ, ctrlMQVQPairsSet, le16(n))
}

// A backend with one queue gives the device it had before MQ: no MQ, three
// queues, max_virtqueue_pairs 1. With four, MQ and nine queues, the
// control queue last.
func TestMQOffered(t *testing.T) {
	for _, c := range []struct {
		pairs, queues int
		mq            bool
	}{{1, 3, false}, {4, 9, true}} {
		h := newHarness(t, opts{pairs: c.pairs})
		var cfg [2]byte
		h.dev.ReadConfig(cfgMaxVirtqueuePairs, cfg[:])
		offered, set := h.dev.QueuePairs()
		if got := h.dev.Features()&FMQ != 0; got != c.mq || h.dev.NumQueues() != c.queues ||
			binary.LittleEndian.Uint16(cfg[:]) != uint16(c.pairs) || offered != c.pairs || set != 1 || h.ctrlQ != c.queues-1 {
			t.Fatalf("%d pairs: MQ %v, %d queues, config max_virtqueue_pairs %d, QueuePairs %d/%d, control queue %d",
				c.pairs, got, h.dev.NumQueues(), binary.LittleEndian.Uint16(cfg[:]), offered, set, h.ctrlQ)
		}
		if h.mq != nil && h.mq.enabled(t) != 1 {
			t.Fatalf("backend queues enabled before VQ_PAIRS_SET: %d", h.mq.enabled(t))
		}
	}
}

// After VQ_PAIRS_SET 2, frames from backend queue 1 reach pair 1's receive
// queue and frames from pair 1's transmit queue reach backend queue 1,
// with pair 1's interrupts; pair 0 still works.
func TestMQFramesOnPair1(t *testing.T) {
	h := newHarness(t, opts{pairs: 2})
	if ack := h.setPairs(2); ack != ctrlAckOK {
		t.Fatalf("VQ_PAIRS_SET 2: ack %d", ack)
	}
	if _, set := h.dev.QueuePairs(); set != 2 || h.mq.enabled(t) != 2 || h.dev.Control().Pairs != 2 {
		t.Fatalf("after VQ_PAIRS_SET 2: pairs %d, backend queues enabled %d", set, h.mq.enabled(t))
	}
	for i := range 2 {
		gpa := h.pairRx(i, smallBuf)
		in := rawFrame(100, byte(10+i))
		if _, err := h.mq.peers[i].Write(in); err != nil {
			t.Fatal(err)
		}
		if got := h.pairTakeRx(i, gpa); !bytes.Equal(got, in) {
			t.Fatalf("pair %d received %d bytes, want the %d written to backend queue %d", i, len(got), len(in), i)
		}
		out := rawFrame(90, byte(20+i))
		h.pairTx(i, out)
		got, err := h.peerReadQ(i)
		if err != nil || !bytes.Equal(got, out) {
			t.Fatalf("backend queue %d: %v, %d bytes; want the frame sent on pair %d", i, err, len(got), i)
		}
	}
	h.wait("pair 1's interrupts", func() bool { return h.irq.count[2].Load() > 0 && h.irq.count[3].Load() > 0 })
	// The transmit goroutine counts a frame after the backend took it: the
	// peer can read it before the count.
	h.wait("both frames counted", func() bool { c := h.dev.Counters(); return c.RxPackets == 2 && c.TxPackets == 2 })
	if c := h.dev.Counters(); c.RxPackets != 2 || c.TxPackets != 2 || c.IdleQueueKicks != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// VQ_PAIRS_SET with 0, more than offered, a wrong length or an unknown MQ
// command gets VIRTIO_NET_ERR, is counted and changes nothing; without MQ
// negotiated even a good count is refused.
func TestMQPairsSetRejects(t *testing.T) {
	h := newHarness(t, opts{pairs: 2})
	cases := map[string][]byte{
		"zero":         append([]byte{ctrlClassMQ, ctrlMQVQPairsSet}, le16(0)...),
		"above max":    append([]byte{ctrlClassMQ, ctrlMQVQPairsSet}, le16(3)...),
		"max u16":      append([]byte{ctrlClassMQ, ctrlMQVQPairsSet}, le16(0xffff)...),
		"one byte":     {ctrlClassMQ, ctrlMQVQPairsSet, 2},
		"three bytes":  {ctrlClassMQ, ctrlMQVQPairsSet, 2, 0, 0},
		"RSS_CONFIG":   append([]byte{ctrlClassMQ, 1}, le16(2)...),
		"HASH_CONFIG":  append([]byte{ctrlClassMQ, 2}, le16(2)...),
		"command only": {ctrlClassMQ, ctrlMQVQPairsSet},
	}
	for name, in := range cases {
		if ack := h.ctrlRaw(in, 1); ack != ctrlAckErr {
			t.Errorf("%s: ack %d, want VIRTIO_NET_ERR", name, ack)
		}
	}
	if _, set := h.dev.QueuePairs(); set != 1 || h.mq.enabled(t) != 1 {
		t.Fatalf("pairs %d, backend queues %d after refused commands", set, h.mq.enabled(t))
	}
	if c := h.dev.Counters(); c.CtrlErrors != uint64(len(cases)) || c.CtrlCommands != 0 {
		t.Fatalf("counters %+v", c)
	}

	noMQ := newHarness(t, opts{pairs: 2, drop: FMQ})
	if ack := noMQ.setPairs(2); ack != ctrlAckErr {
		t.Fatalf("VQ_PAIRS_SET without MQ negotiated: ack %d", ack)
	}
	if c := noMQ.dev.Counters(); c.CtrlErrors != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// Without MQ negotiated the device is the one-pair device: control queue
// 2, frames on pair 0, the backend's other queues off.
func TestMQNotNegotiated(t *testing.T) {
	h := newHarness(t, opts{pairs: 3, drop: FMQ})
	if h.ctrlQ != CtrlQueue || h.mq.enabled(t) != 1 {
		t.Fatalf("control queue %d, backend queues enabled %d", h.ctrlQ, h.mq.enabled(t))
	}
	if ack := h.ctrlCmd(ctrlClassRx, ctrlRxPromisc, []byte{0}); ack != ctrlAckOK {
		t.Fatal("control queue at index 2 not served")
	}
	h.refill(1, smallBuf)
	in := rawFrame(64, 3)
	h.peerWrite(in)
	if p := h.takeRx(); !bytes.Equal(p.frame, in) {
		t.Fatal("frame on pair 0 lost")
	}
	h.dev.Notify(3) // no pair 1 without MQ: not a pair's kick at all
	if c := h.dev.Counters(); c.IdleQueueKicks != 0 {
		t.Fatalf("counters %+v", c)
	}
}

// A guest that kicks a pair beyond those it set is ignored and counted,
// never served; what it queued there is sent once the pair is in use
// again.
func TestMQIdlePairKick(t *testing.T) {
	h := newHarness(t, opts{pairs: 2})
	out := rawFrame(80, 5)
	h.pairTx(1, out) // before VQ_PAIRS_SET: pair 1 is idle
	h.pairRx(1, smallBuf)
	if c := h.dev.Counters(); c.IdleQueueKicks != 2 {
		t.Fatalf("idle kicks %d, want 2", c.IdleQueueKicks)
	}
	time.Sleep(50 * time.Millisecond)
	if h.txq[1].UsedIdx() != 0 {
		t.Fatal("an idle pair's transmit chain was served")
	}
	h.mq.peers[1].SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := h.mq.peers[1].Read(make([]byte, 2048)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("backend queue 1 got something from an idle pair: %v", err)
	}
	// In use: the queued frame goes out.
	if h.setPairs(2) != ctrlAckOK {
		t.Fatal("VQ_PAIRS_SET 2 refused")
	}
	if got, err := h.peerReadQ(1); err != nil || !bytes.Equal(got, out) {
		t.Fatalf("queued frame after VQ_PAIRS_SET 2: %v, %d bytes", err, len(got))
	}
	// Back to one pair: pair 1 stops before the ack, its backend queue is
	// turned off, and its kicks are counted again.
	if h.setPairs(1) != ctrlAckOK {
		t.Fatal("VQ_PAIRS_SET 1 refused")
	}
	if h.mq.enabled(t) != 1 {
		t.Fatalf("backend queues enabled %d after VQ_PAIRS_SET 1", h.mq.enabled(t))
	}
	used := h.txq[1].UsedIdx()
	h.pairTx(1, out)
	time.Sleep(50 * time.Millisecond)
	if h.txq[1].UsedIdx() != used || h.dev.Counters().IdleQueueKicks != 3 {
		t.Fatalf("kick of pair 1 after VQ_PAIRS_SET 1: used %d→%d, counters %+v", used, h.txq[1].UsedIdx(), h.dev.Counters())
	}
	// Pair 0 is unaffected.
	h.pairTx(0, out)
	if got, err := h.peerReadQ(0); err != nil || !bytes.Equal(got, out) {
		t.Fatalf("pair 0 after VQ_PAIRS_SET 1: %v", err)
	}
}

// A backend that refuses to turn a queue on gets VIRTIO_NET_ERR and the
// device stays on one pair.
func TestMQBackendRefuses(t *testing.T) {
	h := newHarness(t, opts{pairs: 2})
	h.mq.mu.Lock()
	h.mq.refuse = errors.New("TUNSETQUEUE: no")
	h.mq.mu.Unlock()
	if ack := h.setPairs(2); ack != ctrlAckErr {
		t.Fatalf("ack %d, want VIRTIO_NET_ERR", ack)
	}
	if _, set := h.dev.QueuePairs(); set != 1 {
		t.Fatalf("pairs %d after a refusal", set)
	}
	h.pairTx(1, rawFrame(60, 1))
	if c := h.dev.Counters(); c.IdleQueueKicks != 1 || c.CtrlErrors != 1 {
		t.Fatalf("counters %+v", c)
	}
}

// Pause and Resume keep the pairs in use; a snapshot carries them into a
// device with as many backend queues, and is refused by one with fewer.
func TestMQPauseAndState(t *testing.T) {
	h := newHarness(t, opts{pairs: 2})
	if h.setPairs(2) != ctrlAckOK {
		t.Fatal("VQ_PAIRS_SET 2 refused")
	}
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	out := rawFrame(70, 9)
	h.pairTx(1, out)
	if got, err := h.peerReadQ(1); err != nil || !bytes.Equal(got, out) {
		t.Fatalf("pair 1 after Resume: %v", err)
	}
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	state, err := h.dev.SaveState()
	if err != nil {
		t.Fatal(err)
	}

	one := newHarness(t, opts{})
	one.dev.Reset()
	if err := one.dev.RestoreState(state); !errors.Is(err, ErrState) {
		t.Fatalf("two-pair state into a one-pair device: %v", err)
	}
	h2 := newHarness(t, opts{pairs: 2})
	h2.dev.Reset()
	if err := h2.dev.RestoreState(state); err != nil {
		t.Fatal(err)
	}
	if offered, set := h2.dev.QueuePairs(); offered != 2 || set != 2 {
		t.Fatalf("restored pairs %d/%d", set, offered)
	}
	h2.activate()
	if h2.mq.enabled(t) != 2 {
		t.Fatalf("backend queues enabled %d after restore", h2.mq.enabled(t))
	}
	h2.pairTx(1, out)
	if got, err := h2.peerReadQ(1); err != nil || !bytes.Equal(got, out) {
		t.Fatalf("restored pair 1: %v", err)
	}
	// A guest reset goes back to one pair.
	h2.dev.Reset()
	h2.activate()
	if _, set := h2.dev.QueuePairs(); set != 1 || h2.mq.enabled(t) != 1 {
		t.Fatalf("after reset: pairs %d, backend queues %d", set, h2.mq.enabled(t))
	}

	// A version 2 state (before MQ) restores as one pair.
	v2 := append([]byte(nil), state[:len(state)-stPairsLen]...)
	binary.LittleEndian.PutUint16(v2[stVersion:], 2)
	one2 := newHarness(t, opts{})
	one2.dev.Reset()
	if err := one2.dev.RestoreState(v2); err != nil {
		t.Fatal(err)
	}
	if offered, set := one2.dev.QueuePairs(); offered != 1 || set != 1 {
		t.Fatalf("version 2 restored as %d/%d pairs", set, offered)
	}
	if err := h2.dev.RestoreState(v2); !errors.Is(err, ErrState) {
		t.Fatalf("version 2 state into a two-pair device: %v", err)
	}
}

// MQ without the control queue breaks the spec: activation fails with a
// guest error.
func TestMQWithoutCtrlVQ(t *testing.T) {
	mq := newTestMQ(t, 2, false, 0)
	dev, err := New(Config{Backend: mq, MAC: guestMAC[:]})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	err = dev.Activate(context.Background(), virtio.Activation{Mem: mem, Features: dev.Features() &^ FCtrlVQ,
		Queues: make([]*queue.Queue, dev.NumQueues()), Interrupt: &fakeIRQ{ch: make(chan int, 1)}})
	if !errors.Is(err, queue.ErrGuest) || !strings.Contains(err.Error(), "MQ without") {
		t.Fatalf("Activate with MQ and no CTRL_VQ: %v", err)
	}
}
