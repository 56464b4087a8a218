package virtiopci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

// pausableDevice is a fakeDevice that can be paused and has state of its
// own; hold makes Pause keep a chain it took (a device that breaks the
// pause contract).
type pausableDevice struct {
	*fakeDevice
	pmu      sync.Mutex
	pauses   int
	resumes  int
	state    []byte
	restored [][]byte
	hold     bool
}

func newPausable(nq int) *pausableDevice {
	return &pausableDevice{fakeDevice: newFakeDevice(nq), state: []byte("S-device")}
}

func (d *pausableDevice) Pause() error {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	d.pauses++
	if d.hold {
		a, _ := d.lastActivation()
		var c queue.Chain
		if ok, err := a.Queues[0].Pop(&c); !ok || err != nil {
			return errors.New("fake: nothing to hold")
		}
	}
	return nil
}

func (d *pausableDevice) Resume() error {
	d.pmu.Lock()
	defer d.pmu.Unlock()
	d.resumes++
	return nil
}

func (d *pausableDevice) SaveState() ([]byte, error) { return d.state, nil }

func (d *pausableDevice) RestoreState(b []byte) error {
	if len(b) == 0 || b[0] != 'S' {
		return errors.New("fake: bad device state")
	}
	d.restored = append(d.restored, append([]byte(nil), b...))
	return nil
}

// driveToOK programs MSI-X (vector i for queue i, the last for config),
// negotiates and enables nq queues of 64 laid out by testdrivers, and sets
// DRIVER_OK.
func driveToOK(t testing.TB, g *guest, mem *guestmem.Memory, nq int) []*testdriver.Driver {
	t.Helper()
	for i := 0; i <= nq; i++ {
		g.programVector(i, 0xfee00000, 0x30+uint32(i))
	}
	g.msixControl(true, false)
	if !g.negotiate(virtio.FVersion1 | virtio.FEventIdx) {
		t.Fatal("negotiation failed")
	}
	g.w16(g.common+ccMSIXConfig, uint16(nq))
	var ds []*testdriver.Driver
	for q := 0; q < nq; q++ {
		base := uint64(0x10000 + q*0x10000)
		d := testdriver.New(mem, 64, base, base+0x10000, 0)
		d.EventIdx = true
		g.setupQueue(uint16(q), 64, d.L.Desc, d.L.Avail, d.L.Used, uint16(q))
		ds = append(ds, d)
	}
	g.setStatus(g.status() | virtio.StatusDriverOK)
	if g.status()&virtio.StatusDeviceNeedsReset != 0 {
		t.Fatal("device needs reset after DRIVER_OK")
	}
	return ds
}

// copyMem returns a copy of mem, as a snapshot's memory file holds it.
func copyMem(t testing.TB, mem *guestmem.Memory) *guestmem.Memory {
	t.Helper()
	m2 := newTestMem(t)
	src, err := mem.Slice(0, mem.Size())
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := m2.Slice(0, m2.Size())
	copy(dst, src)
	return m2
}

// savedFake returns a transport state saved from a running, paused fake
// function with 2 queues, and that function's memory.
func savedFake(t testing.TB) ([]byte, *guestmem.Memory) {
	t.Helper()
	mem := newTestMem(t)
	g := newGuest(t, Config{Device: newPausable(2), Mem: mem, Interrupts: &fakeInterrupts{}})
	cs := g.tr.ConfigSpace()
	cs.SetBARAddress(0, 0xe000_0000)
	cs.SetCommand(pci.CommandMemory | pci.CommandBusMaster)
	driveToOK(t, g, mem, 2)
	if err := g.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	b, err := g.tr.SaveState()
	if err != nil {
		t.Fatal(err)
	}
	return b, mem
}

func TestSaveStateNeedsPauseAndDrain(t *testing.T) {
	mem := newTestMem(t)
	dev := newPausable(1)
	g := newGuest(t, Config{Device: dev, Mem: mem, Interrupts: &fakeInterrupts{}})
	ds := driveToOK(t, g, mem, 1)
	if _, err := g.tr.SaveState(); !errors.Is(err, ErrNotPaused) {
		t.Fatalf("SaveState before Pause = %v; want ErrNotPaused", err)
	}
	ds[0].Add(testdriver.Seg{Addr: ds[0].Alloc(8, 8), Len: 8})
	dev.hold = true
	if err := g.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	_, err := g.tr.SaveState()
	if err == nil || !strings.Contains(err.Error(), "virtio-net: queue 0 has 1 chains in flight") {
		t.Fatalf("SaveState with a chain in flight = %v", err)
	}
	if err := g.tr.Pause(); err != nil || dev.pauses != 1 {
		t.Fatalf("second Pause = %v, device paused %d times; want once", err, dev.pauses)
	}
}

func TestPauseNotPausableDevice(t *testing.T) {
	g, _, _ := fakeSetup(t, 1)
	if err := g.tr.Pause(); err != nil { // not active: fine
		t.Fatalf("Pause of an inactive plain device: %v", err)
	}
	g.tr.Resume()
	mem := g.tr.mem
	driveToOK(t, g, mem, 1)
	if err := g.tr.Pause(); err == nil || !strings.Contains(err.Error(), "cannot be paused") {
		t.Fatalf("Pause of an active device without Pause = %v", err)
	}
}

// TestActivatePausedByGuest: a guest that sets DRIVER_OK while the function
// is paused gets its device activated paused.
func TestActivateWhilePaused(t *testing.T) {
	mem := newTestMem(t)
	dev := newPausable(1)
	g := newGuest(t, Config{Device: dev, Mem: mem, Interrupts: &fakeInterrupts{}})
	if err := g.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	driveToOK(t, g, mem, 1)
	a, n := dev.lastActivation()
	if n != 1 || !a.Paused {
		t.Fatalf("activation while paused: %d activations, Paused %v", n, a.Paused)
	}
	if err := g.tr.Resume(); err != nil || dev.resumes != 1 {
		t.Fatalf("Resume = %v, device resumed %d times", err, dev.resumes)
	}
}

func TestRestoreFake(t *testing.T) {
	state, mem := savedFake(t)
	mem2 := copyMem(t, mem)
	dev := newPausable(2)
	ints := &fakeInterrupts{}
	var changes []pci.BARChange
	g := newGuest(t, Config{Device: dev, Mem: mem2, Interrupts: ints, OnBARChange: func(c pci.BARChange) { changes = append(changes, c) }})
	if err := g.tr.RestoreState(state); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	if len(changes) != 1 || !changes[0].New.Mapped || changes[0].New.Addr != 0xe000_0000 {
		t.Fatalf("BAR changes after restore: %+v", changes)
	}
	for i, v := range ints.vecs {
		v.mu.Lock()
		addr, data, masked := v.addr, v.data, v.masked
		v.mu.Unlock()
		if addr != 0xfee00000 || data != 0x30+uint32(i) || masked {
			t.Fatalf("vector %d programmed %#x/%#x masked %v after restore", i, addr, data, masked)
		}
	}
	want := uint8(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	if st := g.status(); st != want {
		t.Fatalf("status %#x after restore; want %#x", st, want)
	}
	g.w16(g.common+ccQueueSelect, 1)
	if v, en := g.r16(g.common+ccQueueMSIXVector), g.r16(g.common+ccQueueEnable); v != 1 || en != 1 {
		t.Fatalf("queue 1 vector %d enable %d after restore", v, en)
	}
	a, n := dev.lastActivation()
	if n != 1 || !a.Paused || a.Queues[0] == nil || a.Queues[1] == nil {
		t.Fatalf("restored activation: %d, paused %v, queues %v", n, a.Paused, a.Queues)
	}
	if len(dev.restored) != 1 || string(dev.restored[0]) != "S-device" {
		t.Fatalf("device state restored: %q", dev.restored)
	}
	before := []int{ints.vecs[0].count(), ints.vecs[1].count(), ints.vecs[2].count()}
	if err := g.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	for i, b := range before {
		want := b + 1
		if i == 2 {
			want = b // the configuration vector is not signalled
		}
		if got := ints.vecs[i].count(); got != want {
			t.Fatalf("vector %d fired %d times on Resume after restore; want %d", i, got-b, want-b)
		}
	}
	// A second pause/resume does not signal again.
	g.tr.Pause()
	g.tr.Resume()
	if got := ints.vecs[0].count(); got != before[0]+1 {
		t.Fatalf("vector 0 fired again on a plain Resume")
	}
	// Restoring twice is refused: the function is no longer fresh.
	if err := g.tr.RestoreState(state); err == nil {
		t.Fatal("RestoreState on a restored function accepted")
	}
}

func TestRestoreRejects(t *testing.T) {
	state, mem := savedFake(t)
	le := binary.LittleEndian
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), state...)) }
	q0 := stHeaderSize
	for name, tc := range map[string]struct {
		data []byte
		mem  func(m *guestmem.Memory)
		nq   int
		want string
	}{
		"empty":     {data: nil, want: "shorter than the"},
		"truncated": {data: state[:len(state)-1], want: "device state of 8 bytes with 7 left"},
		"trailing":  {data: append(append([]byte(nil), state...), 0), want: "device state of 8 bytes with 9 left"},
		"magic":     {data: edit(func(b []byte) []byte { b[0] = 'X'; return b }), want: "magic"},
		"version":   {data: edit(func(b []byte) []byte { le.PutUint16(b[stVersion:], 2); return b }), want: "version 2"},
		"type":      {data: edit(func(b []byte) []byte { le.PutUint16(b[stDeviceType:], 2); return b }), want: "saved for virtio-blk, restored into virtio-net"},
		"queues":    {data: state, nq: 3, want: "2 queues saved, the device has 3"},
		"features":  {data: edit(func(b []byte) []byte { b[stDrvFeatures] |= 1 << 6; return b }), want: "driver features 0x40 not offered"},
		"size":      {data: edit(func(b []byte) []byte { le.PutUint16(b[q0+sqSize:], 300); return b }), want: "queue 0 size 300 is not a power of two"},
		"vector":    {data: edit(func(b []byte) []byte { le.PutUint16(b[q0+stQueueSize+sqVector:], 9); return b }), want: "queue 1 vector 9 of 3"},
		"in flight": {data: edit(func(b []byte) []byte { le.PutUint16(b[q0+sqNextAvail:], 1); return b }), want: "queue 0 next avail 1 differs from next used 0"},
		"identity":  {data: edit(func(b []byte) []byte { b[stConfigSpace] ^= 1; return b }), want: "vendor and device ID"},
		"msix":      {data: edit(func(b []byte) []byte { b[q0+2*stQueueSize+msixEntryCtrl] = 2; return b }), want: "MSI-X entry 0"},
		"used idx": {data: state, mem: func(m *guestmem.Memory) { m.PutUint16(0x10488+2, 7) }, // queue 0's used idx (testdriver layout)
			want: "queue 0: virtio queue: saved state does not fit guest memory: guest used idx 7 differs from saved 0"},
		"device state": {data: edit(func(b []byte) []byte { b[len(b)-8] = 'X'; return b }), want: "fake: bad device state"},
	} {
		t.Run(name, func(t *testing.T) {
			m := copyMem(t, mem)
			if tc.mem != nil {
				tc.mem(m)
			}
			nq := tc.nq
			if nq == 0 {
				nq = 2
			}
			g := newGuest(t, Config{Device: newPausable(nq), Mem: m, Interrupts: &fakeInterrupts{}})
			err := g.tr.RestoreState(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("RestoreState = %v; want an error with %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
		})
	}
}

// TestSnapshotBlk saves a paused virtio-blk function with a request the
// driver made available but did not kick, restores it into a fresh
// function over a copy of guest memory, and drives the restored queue.
func TestSnapshotBlk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	open := func(mem *guestmem.Memory, ints *fakeInterrupts) *guest {
		dev, err := blk.Open(blk.Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return newGuest(t, Config{Device: dev, Mem: mem, Interrupts: ints})
	}
	mem := newTestMem(t)
	ints := &fakeInterrupts{}
	g := open(mem, ints)
	g.tr.ConfigSpace().SetBARAddress(0, 0xe000_0000)
	g.tr.ConfigSpace().SetCommand(pci.CommandMemory)
	for i := 0; i <= 1; i++ {
		g.programVector(i, 0xfee00000, 0x30+uint32(i))
	}
	g.msixControl(true, false)
	feat := uint64(virtio.FVersion1 | virtio.FEventIdx | blk.FFlush)
	if !g.negotiate(feat) {
		t.Fatal("negotiation failed")
	}
	g.w16(g.common+ccMSIXConfig, 1)
	d := testdriver.New(mem, 128, 0x10000, 4<<20, 0)
	d.EventIdx = true
	g.setupQueue(0, 128, d.L.Desc, d.L.Avail, d.L.Used, 0)
	g.setStatus(g.status() | virtio.StatusDriverOK)

	// post makes a request available on mem and returns its status address.
	post := func(mem *guestmem.Memory, typ uint32, sector uint64, data []byte, in uint64) (st, inAt uint64) {
		segs, inAt, st := blkRequest(d, mem, typ, sector, data, in)
		mem.WriteAt([]byte{0xee}, st)
		d.Add(segs...)
		d.EnableInterrupts()
		return st, inAt
	}
	waitUsed := func(want uint16) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for d.UsedIdx() != want {
			if time.Now().After(deadline) {
				t.Fatalf("used idx %d; want %d", d.UsedIdx(), want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	one := bytes.Repeat([]byte("before!!"), 64)
	post(mem, blk.TypeOut, 4, one, 0)
	g.w16(g.notify, 0)
	waitUsed(1)
	d.Used()

	if err := g.tr.Pause(); err != nil {
		t.Fatal(err)
	}
	two := bytes.Repeat([]byte("during!!"), 64)
	st2, _ := post(mem, blk.TypeOut, 5, two, 0)
	g.w16(g.notify, 0) // a kick while paused
	state, err := g.tr.SaveState()
	if err != nil {
		t.Fatalf("SaveState: %v", err)
	}
	mem2 := copyMem(t, mem)
	if err := g.tr.Close(); err != nil { // releases the image lock
		t.Fatal(err)
	}

	ints2 := &fakeInterrupts{}
	g2 := open(mem2, ints2)
	if err := g2.tr.RestoreState(state); err != nil {
		t.Fatalf("RestoreState: %v", err)
	}
	d.Mem = mem2 // the driver carries on in the restored memory
	time.Sleep(50 * time.Millisecond)
	if d.UsedIdx() != 1 {
		t.Fatal("the restored device served a request before Resume")
	}
	if err := g2.tr.Resume(); err != nil {
		t.Fatal(err)
	}
	waitUsed(2)
	d.Used()
	if s, _ := mem2.Slice(st2, 1); s[0] != blk.StatusOK {
		t.Fatalf("request made available before the snapshot: status %d", s[0])
	}
	if ints2.vecs[0].count() == 0 {
		t.Fatal("no queue interrupt after the restored Resume")
	}
	// Read both writes back through the restored queue, kicked by MMIO.
	st3, in3 := post(mem2, blk.TypeIn, 4, nil, 1024)
	g2.w16(g2.notify, 0)
	waitUsed(3)
	s, _ := mem2.Slice(st3, 1)
	got, _ := mem2.Slice(in3, 1024)
	if s[0] != blk.StatusOK || !bytes.Equal(got[:512], one) || !bytes.Equal(got[512:], two) {
		t.Fatalf("read back through the restored queue: status %d, data %q", s[0], got[:16])
	}
}
