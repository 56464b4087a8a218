package blk

import (
	"encoding/binary"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/guestmem"
)

// newEventfd returns a blocking eventfd closed when the test ends, as the
// transport's kick eventfds are.
func newEventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// The worker waits on the eventfd the device took: a write to it (KVM's,
// on a guest kick) is served without Notify. While active the device
// refuses another; Close leaves the transport's eventfd open.
func TestTakeKick(t *testing.T) {
	fd := newEventfd(t)
	mem, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: testMem})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	dev, err := Open(Config{Path: tempImage(t, 1<<20)})
	if err != nil {
		t.Fatal(err)
	}
	if !dev.TakeKick(0, fd) {
		t.Fatal("an inactive device refused its queue's kick eventfd")
	}
	if dev.TakeKick(1, fd) {
		t.Fatal("took an eventfd for queue 1 of a one-queue device")
	}
	h := &harness{t: t, dev: dev, mem: mem, irq: &fakeIRQ{ch: make(chan int, 16)}, failed: make(chan struct{}, 16)}
	h.feat = dev.Features()
	h.activate()
	if dev.TakeKick(0, newEventfd(t)) {
		t.Fatal("an active device took a second eventfd for its queue")
	}

	d := h.drivers[0]
	st, _ := h.build(req{typ: TypeIn, sector: 1, in: 512})
	d.EnableInterrupts()
	kickAndWait(t, h, fd, "the taken eventfd")
	if _, _, ok := d.Used(); !ok {
		t.Fatal("interrupt without a used entry")
	}
	if b, _ := mem.Slice(st, 1); b[0] != StatusOK {
		t.Fatalf("status %d", b[0])
	}
	// Notify still reaches the worker (a kick that exited to the VMM).
	if res := h.do(req{typ: TypeIn, sector: 2, in: 512}); res.status != StatusOK {
		t.Fatalf("request kicked through Notify: status %d", res.status)
	}

	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil {
		t.Fatalf("Close closed the transport's eventfd: %v", err)
	}
	if dev.TakeKick(0, newEventfd(t)) {
		t.Fatal("a closed device took an eventfd")
	}
}

// A device that ran on its own eventfd takes the transport's after a
// reset, and its next activation waits on that one.
func TestTakeKickAfterReset(t *testing.T) {
	fd := newEventfd(t) // first: it is closed after the device (cleanups run last-in first-out)
	h := newHarness(t, Config{Path: tempImage(t, 1<<20)}, 0)
	if res := h.do(req{typ: TypeIn, sector: 1, in: 512}); res.status != StatusOK {
		t.Fatalf("status %d", res.status)
	}
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if !h.dev.TakeKick(0, fd) {
		t.Fatal("a reset device refused the kick eventfd")
	}
	h.activate()
	d := h.drivers[0]
	h.build(req{typ: TypeIn, sector: 3, in: 512})
	d.EnableInterrupts()
	kickAndWait(t, h, fd, "the eventfd taken after the reset")
}

// kickAndWait writes the kick eventfd fd as KVM does on a guest kick and
// waits for the interrupt of the request it serves.
func kickAndWait(t *testing.T, h *harness, fd int, what string) {
	t.Helper()
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.irq.ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no interrupt for a request kicked through %s", what)
	}
}
