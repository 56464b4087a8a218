package virtionet

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// FuzzCtrl input:
//
//	[0]  flags: bits 0-1 the ack area's size (0 breaks the protocol),
//	     bit 2 the command in one descriptor (else class+command apart),
//	     bit 3 the driver refuses CTRL_RX, bit 4 CTRL_VLAN, bit 5
//	     CTRL_MAC_ADDR, bit 6 the guest offloads, bit 7 MQ
//	[1:] the command: class, command, data
//
// The device has a backend of fuzzMQPairs queues, so it offers MQ.
// One control chain goes through the real control path. Invariants: no
// panic; a chain without an ack byte fails the queue and nothing else; a
// command answered VIRTIO_NET_ERR changes nothing; what VIRTIO_NET_OK
// leaves is a state the spec allows (unicast MAC, VLAN IDs below 4096,
// tables within MACTableMax, offloads among those negotiated, the receive
// path and backend told the same offloads, 1..max_virtqueue_pairs pairs in
// use with as many backend queues enabled).
func FuzzCtrl(f *testing.F) {
	for _, s := range ctrlSeeds() {
		f.Add(s)
	}
	mq := newTestMQ(f, fuzzMQPairs, true, OffloadCsum|OffloadTSO4|OffloadTSO6|OffloadTSOECN)
	be := mq.testBackend
	dev, err := New(Config{Backend: mq, MAC: guestMAC[:]})
	if err != nil {
		f.Fatal(err)
	}
	backing := make([]byte, 64<<10)
	mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: backing})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 1 || len(in) > 32<<10 {
			return
		}
		flags, cmd := in[0], in[1:]
		feat := dev.Features()
		for bit, fb := range []uint64{FCtrlRx, FCtrlVLAN, FCtrlMACAddr, ctrlGuestOffloadBits | FCtrlGuestOffloads, FMQ} {
			if flags&(8<<bit) != 0 {
				feat &^= fb
			}
		}
		clear(backing)
		drv := testdriver.New(mem, 4, 0x100, uint64(len(backing)), 0)
		q, err := queue.New(mem, drv.L, virtio.QueueOptions(feat, 4))
		if err != nil {
			t.Fatal(err)
		}
		a := virtio.Activation{Mem: mem, Features: feat, Interrupt: nopIRQ{}}
		dev.mu.Lock()
		dev.ctrl = defaultCtrl(feat, dev.mac)
		dev.mu.Unlock()
		if err := dev.enableQueues(1); err != nil {
			t.Fatal(err)
		}
		r := &run{d: dev} // not started: VQ_PAIRS_SET only records the count and sets the backend's queues
		for range fuzzMQPairs {
			r.pairs = append(r.pairs, &pair{rx: newReceiver(dev, q, a, guestOffload(feat))}) // only their offloads are used
		}
		rx := r.pairs[fuzzMQPairs-1].rx
		c := newController(dev, q, a, r)
		gpa := drv.Alloc(uint64(len(cmd))+4, 16)
		mem.WriteAt(cmd, gpa)
		ackAt := gpa + uint64(len(cmd))
		mem.WriteAt([]byte{0xaa}, ackAt)
		var segs []testdriver.Seg
		switch {
		case len(cmd) == 0:
		case flags&4 != 0 || len(cmd) <= 2:
			segs = append(segs, testdriver.Seg{Addr: gpa, Len: uint32(len(cmd))})
		default:
			segs = append(segs, testdriver.Seg{Addr: gpa, Len: 2}, testdriver.Seg{Addr: gpa + 2, Len: uint32(len(cmd) - 2)})
		}
		ackLen := uint32(flags & 3)
		if ackLen > 0 {
			segs = append(segs, testdriver.Seg{Addr: ackAt, Len: ackLen, Write: true})
		}
		if len(segs) == 0 {
			return
		}
		drv.Add(segs...)
		before, beforeMAC := dev.Control(), dev.MAC()
		cb := dev.Counters()
		err = c.drain(context.Background())
		after, afterMAC := dev.Control(), dev.MAC()
		ca := dev.Counters()
		unchanged := fmt.Sprint(before) == fmt.Sprint(after) && bytes.Equal(beforeMAC, afterMAC)
		if ackLen == 0 {
			if !errors.Is(err, queue.ErrGuest) || !unchanged || drv.UsedIdx() != 0 {
				t.Fatalf("chain without an ack: err %v, state changed %v, used %d", err, !unchanged, drv.UsedIdx())
			}
			return
		}
		if err != nil {
			t.Fatalf("drain: %v", err)
		}
		_, n, ok := drv.Used()
		ack := make([]byte, 1)
		mem.ReadAt(ack, ackAt)
		switch {
		case !ok || n != 1:
			t.Fatalf("chain used %v with %d bytes", ok, n)
		case ack[0] == ctrlAckErr:
			if !unchanged || ca.CtrlErrors != cb.CtrlErrors+1 {
				t.Fatalf("VIRTIO_NET_ERR but state changed %v or not counted", !unchanged)
			}
		case ack[0] == ctrlAckOK:
			if ca.CtrlCommands != cb.CtrlCommands+1 {
				t.Fatal("VIRTIO_NET_OK not counted")
			}
		default:
			t.Fatalf("ack %#x", ack[0])
		}
		if afterMAC[0]&1 != 0 || bytes.Equal(afterMAC, make([]byte, 6)) {
			t.Fatalf("MAC %v", afterMAC)
		}
		for _, v := range after.VLANs {
			if v >= ctrlVLANs {
				t.Fatalf("VLAN %d", v)
			}
		}
		if len(after.Unicast) > MACTableMax || len(after.Multicast) > MACTableMax {
			t.Fatal("MAC table over MACTableMax")
		}
		if after.GuestOffloads&^(feat&ctrlGuestOffloadBits) != 0 {
			t.Fatalf("guest offloads %#x with %#x negotiated", after.GuestOffloads, feat&ctrlGuestOffloadBits)
		}
		if after.Pairs < 1 || after.Pairs > fuzzMQPairs || (feat&FMQ == 0 && after.Pairs != 1) || mq.enabled(t) != after.Pairs {
			t.Fatalf("%d pairs in use (MQ %v), %d backend queues enabled", after.Pairs, feat&FMQ != 0, mq.enabled(t))
		}
		if o := Offload(rx.guestOff.Load()); o != guestOffload(after.GuestOffloads) {
			t.Fatalf("receive path offloads %#x, recorded %#x", o, after.GuestOffloads)
		}
		if ack[0] == ctrlAckOK && !unchanged && cmd[0] == ctrlClassGuestOffl {
			if o, _ := be.lastOffload(); o != guestOffload(after.GuestOffloads) {
				t.Fatalf("backend offloads %#x, recorded %#x", o, after.GuestOffloads)
			}
		}
	})
}

// ctrlSeeds are the commands Linux sends and malformed ones.
func ctrlSeeds() [][]byte {
	mk := func(flags, class, command byte, data ...byte) []byte {
		return append([]byte{flags, class, command}, data...)
	}
	table := func(n uint32, macs ...byte) []byte {
		return append(binary.LittleEndian.AppendUint32(nil, n), macs...)
	}
	return [][]byte{
		mk(1, ctrlClassRx, ctrlRxPromisc, 1),
		mk(1, ctrlClassRx, ctrlRxAllMulti, 0),
		mk(1|8, ctrlClassRx, ctrlRxPromisc, 1), // CTRL_RX refused
		mk(1, ctrlClassMAC, ctrlMACTableSet, append(table(1, 2, 1, 1, 1, 1, 1), table(1, 1, 0, 0x5e, 0, 0, 1)...)...),
		mk(1, ctrlClassMAC, ctrlMACTableSet, append(table(0), table(0xffffffff)...)...),
		mk(1, ctrlClassMAC, ctrlMACAddrSet, 2, 3, 4, 5, 6, 7),
		mk(1, ctrlClassMAC, ctrlMACAddrSet, 3, 3, 4, 5, 6, 7),
		mk(1, ctrlClassVLAN, ctrlVLANAdd, 0xff, 0x0f),
		mk(1, ctrlClassVLAN, ctrlVLANDel, 0x00, 0x10),
		mk(1, ctrlClassGuestOffl, ctrlGuestOfflSet, 0x82, 0, 0, 0, 0, 0, 0, 0),
		mk(1, ctrlClassGuestOffl, ctrlGuestOfflSet, 0x02, 0x04, 0, 0, 0, 0, 0, 0), // UFO: never offered
		mk(1|64, ctrlClassGuestOffl, ctrlGuestOfflSet, 0x02, 0, 0, 0, 0, 0, 0, 0),
		mk(1, ctrlClassAnnounce, 0),
		mk(1, ctrlClassMQ, ctrlMQVQPairsSet, 2, 0),
		mk(1, ctrlClassMQ, ctrlMQVQPairsSet, fuzzMQPairs, 0),
		mk(1, ctrlClassMQ, ctrlMQVQPairsSet, 0, 0),             // zero pairs
		mk(1, ctrlClassMQ, ctrlMQVQPairsSet, fuzzMQPairs+1, 0), // more than offered
		mk(1, ctrlClassMQ, ctrlMQVQPairsSet, 2),                // short
		mk(1|128, ctrlClassMQ, ctrlMQVQPairsSet, 2, 0),         // MQ not negotiated
		mk(1, ctrlClassMQ, 1, 2, 0),                            // RSS_CONFIG: not offered
		mk(0, ctrlClassRx, ctrlRxPromisc, 1),                   // no ack byte
		mk(2|4, ctrlClassRx, ctrlRxPromisc, 1),
		{1, ctrlClassRx},
	}
}

// fuzzMQPairs is the queue pairs FuzzCtrl's device offers.
const fuzzMQPairs = 4

func TestCtrlFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzCtrl", ctrlSeeds())
}
