package vsock

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// The worker sleeps on the transmit queue's eventfd the device took: a
// guest packet kicked by a write to it (KVM's, on the guest's notify
// write) is served without Notify. Only the transmit queue's is taken, not
// while active, and Close leaves it open.
func TestTakeKickTx(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) }) // after the device's Close (last-in first-out)
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	dev, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	if dev.TakeKick(RxQueue, fd) || dev.TakeKick(EventQueue, fd) {
		t.Fatal("took another queue's eventfd than the transmit queue's")
	}
	if !dev.TakeKick(TxQueue, fd) {
		t.Fatal("an inactive device refused the transmit queue's eventfd")
	}
	g := &guest{t: t, dev: dev, mem: mem, irq: &fakeIRQ{ch: make(chan int, 64)}, failed: make(chan struct{}, 16), rxSize: 4096}
	g.activate()
	if dev.TakeKick(TxQueue, fd) {
		t.Fatal("an active device took an eventfd")
	}
	g.postRx(16)

	// A REQUEST to a port nobody listens on, kicked through the eventfd.
	var b [HeaderLen]byte
	h := hdr(OpRequest, 5, 99)
	h.Encode(b[:])
	gpa := g.txd.Alloc(HeaderLen, 16)
	if err := mem.WriteAt(b[:], gpa); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.txd.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen}); !ok {
		t.Fatal("transmit queue full")
	}
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil {
		t.Fatal(err)
	}
	g.expect(OpRST, 99, 5)

	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
		t.Fatalf("Close closed the transport's eventfd: %v", err)
	}
}
