package virtionet

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// newEventfd returns a blocking eventfd closed when the test ends, as the
// transport's kick eventfds are.
func newEventfd(tb testing.TB) int {
	tb.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return fd
}

// writeKick signals eventfd fd as KVM does on a guest's notify write.
func writeKick(tb testing.TB, fd int) {
	tb.Helper()
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(fd, one[:]); err != nil {
		tb.Fatal(err)
	}
}

// postTx queues one frame (zero header) on pair i's transmit queue without
// a kick.
func (h *harness) postTx(i int, frame []byte) {
	h.t.Helper()
	d := h.txq[i]
	pkt := append(make([]byte, HeaderLen), frame...)
	gpa := d.Alloc(uint64(len(pkt)), 16)
	h.mem.WriteAt(pkt, gpa)
	if _, ok := d.Add(testdriver.Seg{Addr: gpa, Len: HeaderLen}, testdriver.Seg{Addr: gpa + HeaderLen, Len: uint32(len(frame))}); !ok {
		h.t.Fatalf("pair %d transmit queue full", i)
	}
}

// kickTx kicks pair i's transmit queue through the eventfd the device took.
func (h *harness) kickTx(i int) { h.t.Helper(); writeKick(h.t, h.kickFDs[i]) }

// sendKicked posts frame on pair i's transmit queue, kicks it through the
// taken eventfd and fails with what unless the frame comes out of the
// pair's backend queue.
func (h *harness) sendKicked(i int, frame []byte, what string) {
	h.t.Helper()
	h.postTx(i, frame)
	h.kickTx(i)
	if got := h.readQ(i); !bytes.Equal(got, frame) {
		h.t.Fatal(what)
	}
}

// asleep waits until pair i's transmit goroutine has completed everything
// made available and re-enabled notifications (with EVENT_IDX: avail_event
// caught up with avail idx): it then looks at the ring again only when
// woken, so a frame posted afterwards is sent only if the kick arrives.
func (h *harness) asleep(i int) {
	h.t.Helper()
	d := h.txq[i]
	h.poll("the transmit goroutine asleep", func() bool {
		return d.AvailEvent() == d.AvailIdx() && d.UsedIdx() == d.AvailIdx()
	})
}

// settleTx sends one frame on pair i through Notify, waits until the
// transmit goroutine sleeps again (a fresh queue's first drain would take
// a frame without any kick) and takes the completion.
func (h *harness) settleTx(i int) {
	h.t.Helper()
	h.postTx(i, rawFrame(66, 0xee))
	h.dev.Notify(2*i + 1)
	h.readQ(i)
	h.asleep(i)
	if _, _, ok := h.txq[i].Used(); !ok {
		h.t.Fatal("no used entry for the settling frame")
	}
}

// readQ returns the next frame on backend queue i (the harness's peer for
// a one-queue device), failing the test if none comes.
func (h *harness) readQ(i int) []byte {
	h.t.Helper()
	if h.mq == nil {
		return h.peerRead()
	}
	b, err := h.peerReadQ(i)
	if err != nil {
		h.t.Fatalf("backend queue %d: %v", i, err)
	}
	return b
}

// The transmit goroutine waits on the eventfd the device took: a write to
// it (KVM's, on a guest kick) sends the frame with no Notify, and the
// driver gets its interrupt. Only transmit queues are taken; while active
// the device refuses another; Notify still works; Close leaves the
// transport's eventfd open and the device refuses eventfds afterwards.
func TestTakeKick(t *testing.T) {
	h := newHarness(t, opts{takeKicks: true})
	for _, q := range []int{RxQueue, CtrlQueue, 3, -1} {
		if h.dev.TakeKick(q, newEventfd(t)) {
			t.Errorf("took an eventfd for queue %d", q)
		}
	}
	if h.dev.TakeKick(TxQueue, newEventfd(t)) {
		t.Fatal("an active device took a second eventfd for its transmit queue")
	}
	h.settleTx(0)
	out := rawFrame(90, 1)
	h.postTx(0, out)
	h.txd.EnableInterrupts()
	irqs := h.irq.count[TxQueue].Load()
	h.kickTx(0)
	if got := h.peerRead(); !bytes.Equal(got, out) {
		t.Fatalf("frame kicked through the eventfd: got %d bytes", len(got))
	}
	h.wait("the transmit completion", func() bool { return h.txd.UsedIdx() == 2 })
	h.poll("the transmit interrupt", func() bool { return h.irq.count[TxQueue].Load() > irqs })

	// A kick that exited to the VMM reaches the same goroutine via Notify.
	out2 := rawFrame(91, 2)
	h.sendTx(header{}, out2, 0)
	if got := h.peerRead(); !bytes.Equal(got, out2) {
		t.Fatal("frame kicked through Notify not sent")
	}
	h.waitTxDone(2)

	closeWithin(t, h.dev)
	if _, err := unix.FcntlInt(uintptr(h.kickFDs[0]), unix.F_GETFL, 0); err != nil {
		t.Fatalf("Close closed the transport's eventfd: %v", err)
	}
	if h.dev.TakeKick(TxQueue, newEventfd(t)) {
		t.Fatal("a closed device took an eventfd")
	}
}

// TestTakeRxKick: a receive loop that polls its backend waits on the
// receive queue's eventfd while the ring is empty, so a kick KVM signals
// there (with no exit, no Notify) lets the waiting frame in. Queue 2 is
// refused (the control queue without MQ), and so is a receive queue on a
// backend the loop cannot poll.
func TestTakeRxKick(t *testing.T) {
	h := newHarness(t, opts{takeKicks: true})
	out := rawFrame(80, 7)
	h.peerWrite(out) // no receive buffer yet: the frame waits for one
	h.poll("the frame read from the backend", func() bool { return h.be.reads.Load() == 1 })
	h.postRx(2048, 0)
	writeKick(t, h.rxKicks[0])
	if got := h.takeRx(); !bytes.Equal(got.frame, out) {
		t.Fatalf("frame after the eventfd kick: %d bytes", len(got.frame))
	}
	h.postRx(2048, 0)
	writeKick(t, h.rxKicks[0])
	out2 := rawFrame(81, 8)
	h.peerWrite(out2)
	if got := h.takeRx(); !bytes.Equal(got.frame, out2) {
		t.Fatal("second frame not delivered")
	}

	be, _ := newTestBackend(t, false, 0)
	dev, err := New(Config{Backend: nonPolling{be}, MAC: guestMAC[:]})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if dev.TakeKick(RxQueue, newEventfd(t)) {
		t.Error("took the receive eventfd of a backend its loop cannot poll")
	}
	if !dev.TakeKick(TxQueue, newEventfd(t)) {
		t.Error("refused the transmit eventfd")
	}
}

// nonPolling hides a backend's PollFD.
type nonPolling struct{ Backend }

// closeWithin closes dev, failing (not hanging) if a goroutine does not end.
func closeWithin(t *testing.T, dev *Device) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- dev.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(waitTime):
		t.Fatal("Close did not return: a goroutine of the device did not end")
	}
}

// Kicks through the eventfd while the device is paused are served after
// Resume, none before; and the transmit goroutine sleeps on the eventfd
// again afterwards.
func TestKickDuringPause(t *testing.T) {
	h := newHarness(t, opts{takeKicks: true})
	h.settleTx(0)
	h.postTx(0, rawFrame(80, 1))
	h.kickTx(0)
	h.readQ(0)
	h.waitTxDone(1)
	if err := h.dev.Pause(); err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{rawFrame(81, 2), rawFrame(82, 3)}
	for _, f := range frames {
		h.postTx(0, f)
		h.kickTx(0)
	}
	h.quiet(0, 2)
	if err := h.dev.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		if got := h.readQ(0); !bytes.Equal(got, f) {
			t.Fatal("frame kicked while paused not sent (in order) after Resume")
		}
	}
	h.waitTxDone(2)
	h.asleep(0)
	out := rawFrame(83, 4)
	h.sendKicked(0, out, "frame kicked after Resume not sent")
}

// A device that ran on its own eventfd (kicks through Notify) takes the
// transport's after a reset, and its next activation waits on that one.
func TestTakeKickAfterReset(t *testing.T) {
	fd := newEventfd(t) // first: it is closed after the device (cleanups run last-in first-out)
	h := newHarness(t, opts{})
	h.sendTx(header{}, rawFrame(70, 1), 0)
	h.readQ(0)
	if err := h.dev.Reset(); err != nil {
		t.Fatal(err)
	}
	if !h.dev.TakeKick(TxQueue, fd) {
		t.Fatal("a reset device refused the transmit eventfd")
	}
	h.kickFDs = []int{fd}
	h.activate()
	h.settleTx(0)
	out := rawFrame(71, 2)
	h.sendKicked(0, out, "frame kicked through the eventfd taken after the reset not sent")
}

// Each pair's transmit goroutine waits on its own eventfd. An idle pair's
// kicks wake nothing; what it queued goes out when VQ_PAIRS_SET puts it in
// use, and VQ_PAIRS_SET stops it again (its goroutine leaves the read).
func TestKickMQ(t *testing.T) {
	h := newHarness(t, opts{pairs: 2, takeKicks: true})
	early := rawFrame(60, 1)
	h.postTx(1, early)
	h.kickTx(1) // pair 1 idle
	time.Sleep(50 * time.Millisecond)
	if h.txq[1].UsedIdx() != 0 {
		t.Fatal("an idle pair's transmit chain was served")
	}
	if h.setPairs(2) != ctrlAckOK {
		t.Fatal("VQ_PAIRS_SET 2 refused")
	}
	if got := h.readQ(1); !bytes.Equal(got, early) {
		t.Fatal("frame queued on the idle pair not sent once in use")
	}
	h.asleep(1)
	h.settleTx(0)
	for i := range 2 {
		out := rawFrame(61+i, byte(2+i))
		h.sendKicked(i, out, fmt.Sprintf("pair %d: frame kicked through its eventfd not sent", i))
		h.asleep(i)
	}
	if h.setPairs(1) != ctrlAckOK {
		t.Fatal("VQ_PAIRS_SET 1 refused")
	}
	used := h.txq[1].UsedIdx()
	h.postTx(1, rawFrame(63, 4))
	h.kickTx(1)
	time.Sleep(50 * time.Millisecond)
	if h.txq[1].UsedIdx() != used {
		t.Fatal("pair 1 served after VQ_PAIRS_SET 1")
	}
	out := rawFrame(64, 5)
	h.sendKicked(0, out, "pair 0 after VQ_PAIRS_SET 1")
}

// Reset and Close end every goroutine the device started and close every
// descriptor it opened, whether it waited on the transport's eventfds or
// on its own (kicks through Notify).
func TestKickResetCloseNoLeak(t *testing.T) {
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("no /proc/self/fd: %v", err)
		}
		return len(ents)
	}
	// No collection meanwhile: an *os.File left open would be closed by
	// its cleanup and hide the leak.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	g0, f0 := runtime.NumGoroutine(), countFDs()
	for _, take := range []bool{true, false} {
		t.Run(map[bool]string{true: "taken", false: "own"}[take], func(t *testing.T) {
			h := newHarness(t, opts{pairs: 2, takeKicks: take})
			kick := func(i int) {
				if take {
					h.kickTx(i)
				} else {
					h.dev.Notify(2*i + 1)
				}
			}
			if h.setPairs(2) != ctrlAckOK {
				t.Fatal("VQ_PAIRS_SET 2 refused")
			}
			for i := range 2 {
				h.postTx(i, rawFrame(60, byte(i)))
				kick(i)
				h.readQ(i)
			}
			if err := h.dev.Reset(); err != nil {
				t.Fatal(err)
			}
			h.activate()
			h.postTx(0, rawFrame(60, 9))
			kick(0)
			h.readQ(0)
			closeWithin(t, h.dev)
		})
	}
	var g, f int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if g, f = runtime.NumGoroutine(), countFDs(); g <= g0 && f <= f0 {
			return
		}
	}
	buf := make([]byte, 1<<16)
	t.Fatalf("after Close: %d goroutines (%d before), %d descriptors (%d before)\n%s", g, g0, f, f0, buf[:runtime.Stack(buf, true)])
}
