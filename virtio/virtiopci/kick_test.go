package virtiopci

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// taken reports which queues' eventfds the device waits on itself; nil
// before the eventfds exist.
func (n *notifier) taken() []bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fds == nil {
		return nil
	}
	t := make([]bool, n.nq)
	for q := range t {
		t[q] = n.files[q] == nil
	}
	return t
}

// kickRig is virtio-blk (a virtio.KickWaiter) behind the transport with a
// fake ioeventfd binder: the test writes a bound eventfd as KVM would on a
// guest kick.
type kickRig struct {
	t      testing.TB
	g      *guest
	mem    *guestmem.Memory
	d      *testdriver.Driver
	ints   *fakeInterrupts // nil when built with other Interrupts
	binder *fakeBinder
}

const kickBase = 0xe000_0000

// newKickRig builds the function; with mapFirst the BAR decodes before
// the driver sets DRIVER_OK (as in every VM), otherwise only after.
func newKickRig(t testing.TB, mem *guestmem.Memory, mapFirst bool) *kickRig {
	t.Helper()
	ints := &fakeInterrupts{}
	r := newKickRigWith(t, mem, mapFirst, ints)
	r.ints = ints
	return r
}

// newKickRigWith is newKickRig with the given interrupts.
func newKickRigWith(t testing.TB, mem *guestmem.Memory, mapFirst bool, ints Interrupts) *kickRig {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := blk.Open(blk.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	r := &kickRig{t: t, mem: mem, binder: &fakeBinder{bound: map[uint64]int{}}}
	r.g = newGuest(t, Config{Device: dev, Mem: mem, Interrupts: ints, Notify: r.binder})
	if err := r.g.tr.ConfigSpace().SetBARAddress(0, kickBase); err != nil {
		t.Fatal(err)
	}
	if mapFirst {
		r.g.tr.ConfigSpace().SetCommand(pci.CommandMemory)
	}
	g := r.g
	for i := 0; i <= 1; i++ {
		g.programVector(i, 0xfee00000, 0x30+uint32(i))
	}
	g.msixControl(true, false)
	if !g.negotiate(virtio.FVersion1 | virtio.FEventIdx | blk.FFlush) {
		t.Fatal("negotiation failed")
	}
	g.w16(g.common+ccMSIXConfig, 1)
	r.d = testdriver.New(mem, 128, 0x10000, 4<<20, 0)
	r.d.EventIdx = true
	g.setupQueue(0, 128, r.d.L.Desc, r.d.L.Avail, r.d.L.Used, 0)
	g.setStatus(g.status() | virtio.StatusDriverOK)
	if !mapFirst {
		r.g.tr.ConfigSpace().SetCommand(pci.CommandMemory)
	}
	return r
}

// post makes a write of one sector available and returns its status byte's
// address (0xee until the device answers).
func (r *kickRig) post(sector uint64) uint64 {
	segs, _, st := blkRequest(r.d, r.mem, blk.TypeOut, sector, bytes.Repeat([]byte{byte(sector)}, 512), 0)
	r.mem.WriteAt([]byte{0xee}, st)
	r.d.Add(segs...)
	r.d.EnableInterrupts()
	return st
}

// kickFD kicks queue 0 as KVM does: a write to the eventfd bound at the
// notify register of a BAR at base.
func (r *kickRig) kickFD(base uint64) {
	r.t.Helper()
	fd, ok := r.binder.bound[base+notifyOffset]
	if !ok {
		r.t.Fatalf("no eventfd bound at %#x: %v", base+notifyOffset, r.binder.bound)
	}
	if _, err := writeEventfd(fd); err != nil {
		r.t.Fatal(err)
	}
}

func (r *kickRig) waitUsed(want uint16) {
	r.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for r.d.UsedIdx() != want {
		if time.Now().After(deadline) {
			r.t.Fatalf("used idx %d; want %d", r.d.UsedIdx(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func (r *kickRig) checkStatus(st uint64) {
	r.t.Helper()
	if s, _ := r.mem.Slice(st, 1); s[0] != blk.StatusOK {
		r.t.Fatalf("request status %#x", s[0])
	}
}

// The device takes the eventfd it is bound with: a write to it is served
// by the device's worker with no reader goroutine in the transport.
func TestKickHandOver(t *testing.T) {
	r := newKickRig(t, newTestMem(t), true)
	if taken := r.g.tr.notify.taken(); len(taken) != 1 || !taken[0] {
		t.Fatalf("queues the device waits on itself: %v; want [true]", taken)
	}
	r.g.tr.notify.mu.Lock()
	fd := r.g.tr.notify.fds[0]
	r.g.tr.notify.mu.Unlock()
	if r.binder.bound[kickBase+notifyOffset] != fd {
		t.Fatalf("bound %v; the device's eventfd is %d", r.binder.bound, fd)
	}
	before := r.ints.vecs[0].count()
	st := r.post(1)
	r.kickFD(kickBase)
	r.waitUsed(1)
	r.checkStatus(st)
	deadline := time.After(10 * time.Second)
	for r.ints.vecs[0].count() == before {
		select {
		case <-r.ints.vecs[0].fired:
		case <-deadline:
			t.Fatal("no queue interrupt for a request kicked through the eventfd")
		}
	}
	// A kick that exits to the VMM (any other width, or no ioeventfd)
	// still reaches the worker through Notify.
	st = r.post(2)
	r.g.w32(r.g.notify, 0)
	r.waitUsed(2)
	r.checkStatus(st)
}

// The guest moves the BAR and turns decode off and on: the same eventfd is
// bound where the notify register is, and kicks are served throughout.
func TestKickRebind(t *testing.T) {
	r := newKickRig(t, newTestMem(t), true)
	fd := r.binder.bound[kickBase+notifyOffset]
	const moved = 0xd000_0000
	r.g.setCfg32(pci.BAR0Offset, moved)
	if got, ok := r.binder.bound[moved+notifyOffset]; !ok || got != fd || len(r.binder.bound) != 1 {
		t.Fatalf("bindings after the move: %v; want eventfd %d at %#x only", r.binder.bound, fd, moved+notifyOffset)
	}
	st := r.post(1)
	r.kickFD(moved)
	r.waitUsed(1)
	r.checkStatus(st)

	r.g.setCfg16(pci.CommandOffset, 0)
	if len(r.binder.bound) != 0 {
		t.Fatalf("bindings with decode off: %v", r.binder.bound)
	}
	st = r.post(2)
	r.g.w16(r.g.notify, 0) // the test's BAR accesses reach the region whatever the decode bit
	r.waitUsed(2)
	r.checkStatus(st)

	r.g.setCfg16(pci.CommandOffset, pci.CommandMemory)
	st = r.post(3)
	r.kickFD(moved)
	r.waitUsed(3)
	r.checkStatus(st)
	if taken := r.g.tr.notify.taken(); !taken[0] {
		t.Fatal("the rebinds gave the eventfd back to a transport reader")
	}
}

// Kicks through the eventfd while the function is paused are served after
// Resume, none lost, none before.
func TestKickDuringPause(t *testing.T) {
	r := newKickRig(t, newTestMem(t), true)
	st := r.post(1)
	r.kickFD(kickBase)
	r.waitUsed(1)
	if err := r.g.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	st2 := r.post(2)
	r.kickFD(kickBase)
	st3 := r.post(3)
	r.kickFD(kickBase)
	time.Sleep(50 * time.Millisecond)
	if got := r.d.UsedIdx(); got != 1 {
		t.Fatalf("paused device completed requests: used idx %d", got)
	}
	if err := r.g.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	r.waitUsed(3)
	for _, s := range []uint64{st, st2, st3} {
		r.checkStatus(s)
	}
	// And the worker sleeps on the eventfd again afterwards.
	st4 := r.post(4)
	r.kickFD(kickBase)
	r.waitUsed(4)
	r.checkStatus(st4)
}

// A device already active when the BAR first decodes keeps its own
// eventfd: the transport reads the bound one and calls Notify.
func TestKickActiveBeforeMapped(t *testing.T) {
	r := newKickRig(t, newTestMem(t), false)
	if taken := r.g.tr.notify.taken(); len(taken) != 1 || taken[0] {
		t.Fatalf("queues the device waits on itself: %v; want [false] (it was active)", taken)
	}
	st := r.post(1)
	r.kickFD(kickBase)
	r.waitUsed(1)
	r.checkStatus(st)
}

// Close ends every goroutine the function and the device started and
// closes every descriptor they opened, after kicks through both paths.
func TestKickCloseNoLeak(t *testing.T) {
	mem := newTestMem(t)
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skipf("no /proc/self/fd: %v", err)
		}
		return len(ents)
	}
	settle := func(goroutines, fds int) (int, int) {
		var g, f int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			g, f = runtime.NumGoroutine(), countFDs()
			if g <= goroutines && f <= fds {
				break
			}
		}
		return g, f
	}
	g0, f0 := runtime.NumGoroutine(), countFDs()
	for _, mapFirst := range []bool{true, false} {
		r := newKickRig(t, mem, mapFirst)
		st := r.post(1)
		r.kickFD(kickBase)
		r.waitUsed(1)
		r.checkStatus(st)
		st = r.post(2)
		r.g.w16(r.g.notify, 0)
		r.waitUsed(2)
		if err := r.g.tr.Pause(); err != nil {
			t.Fatal(err)
		}
		if err := r.g.tr.Close(); err != nil {
			t.Fatal(err)
		}
		if g, f := settle(g0, f0); g > g0 || f > f0 {
			buf := make([]byte, 1<<16)
			t.Fatalf("mapFirst %v: after Close %d goroutines (%d before), %d descriptors (%d before)\n%s",
				mapFirst, g, g0, f, f0, buf[:runtime.Stack(buf, true)])
		}
	}
}
