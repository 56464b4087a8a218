package virtiopci

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
	"github.com/corral-vmm/corral/virtio/queue"
)

func fakeSetup(t *testing.T, nq int) (*guest, *fakeDevice, *fakeInterrupts) {
	dev := newFakeDevice(nq)
	ints := &fakeInterrupts{}
	g := newGuest(t, Config{Device: dev, Mem: newTestMem(t), Interrupts: ints})
	return g, dev, ints
}

func TestIdentityAndCapabilities(t *testing.T) {
	g, _, ints := fakeSetup(t, 3)
	if v, d := g.cfg16(pci.VendorIDOffset), g.cfg16(pci.DeviceIDOffset); v != 0x1af4 || d != 0x1041 {
		t.Fatalf("IDs %04x:%04x; want 1af4:1041 (virtio-net)", v, d)
	}
	if r := g.cfg8(pci.RevisionOffset); r != 1 {
		t.Fatalf("revision %d", r)
	}
	if s := g.cfg16(pci.SubsystemIDOffset); s < 0x40 {
		t.Fatalf("subsystem ID %#x below 0x40", s)
	}
	if c := g.cfg32(pci.RevisionOffset) >> 8; c != 0x020000 {
		t.Fatalf("class %#x", c)
	}
	if g.notifyMult != NotifyMultiplier || g.notify != notifyOffset || g.common != commonOffset || g.device != deviceOffset || g.isr != isrOffset {
		t.Fatalf("structures at common %#x isr %#x device %#x notify %#x (x%d)", g.common, g.isr, g.device, g.notify, g.notifyMult)
	}
	// 64-bit memory BAR 0 of BARSize.
	if b := g.tr.ConfigSpace().BAR(0); b.Kind != pci.BARMem64 || b.Size != BARSize {
		t.Fatalf("BAR 0 = %+v", b)
	}
	// MSI-X: 4 vectors (3 queues + config), table and PBA in BAR 0.
	if ctl := g.cfg16(g.msixCap + 2); ctl&0x7ff != 3 {
		t.Fatalf("MSI-X table size field %d; want 3", ctl&0x7ff)
	}
	if tb, pba := g.cfg32(g.msixCap+4), g.cfg32(g.msixCap+8); tb != msixTableOffset || pba != msixPBAOffset {
		t.Fatalf("MSI-X table %#x PBA %#x", tb, pba)
	}
	if len(ints.vecs) != 4 {
		t.Fatalf("%d MSI vectors made; want 4", len(ints.vecs))
	}
	if n := g.r16(g.common + ccNumQueues); n != 3 {
		t.Fatalf("num_queues %d", n)
	}
	for q := uint16(0); q < 3; q++ {
		g.w16(g.common+ccQueueSelect, q)
		if off := g.r16(g.common + ccQueueNotifyOff); off != q {
			t.Fatalf("queue %d notify_off %d", q, off)
		}
		if sz := g.r16(g.common + ccQueueSize); sz != 64 {
			t.Fatalf("queue %d size %d; want the device max 64", q, sz)
		}
	}
	g.w16(g.common+ccQueueSelect, 3)
	if sz := g.r16(g.common + ccQueueSize); sz != 0 {
		t.Fatalf("queue past num_queues has size %d; want 0", sz)
	}
	// Device configuration through the DEVICE structure.
	if v := g.r32(g.device + 4); v != 0x08070605 {
		t.Fatalf("device config read %#x", v)
	}
	// The guest cannot change the IDs or the capabilities.
	g.setCfg32(pci.VendorIDOffset, 0)
	g.setCfg32(g.msixCap+4, 0)
	if g.cfg16(pci.VendorIDOffset) != 0x1af4 || g.cfg32(g.msixCap+4) != msixTableOffset {
		t.Fatal("read-only configuration changed")
	}
}

func TestFeatureNegotiation(t *testing.T) {
	g, dev, _ := fakeSetup(t, 1)
	if f := g.deviceFeatures(); f != dev.features {
		t.Fatalf("device features %#x; want %#x", f, dev.features)
	}
	g.w32(g.common+ccDeviceFeatureSelect, 2)
	if v := g.r32(g.common + ccDeviceFeature); v != 0 {
		t.Fatalf("feature window 2 reads %#x", v)
	}
	if g.negotiate(virtio.FVersion1 | 1<<4) {
		t.Fatal("FEATURES_OK accepted with a feature not offered")
	}
	if g.negotiate(1 << 3) {
		t.Fatal("FEATURES_OK accepted without VIRTIO_F_VERSION_1")
	}
	if !g.negotiate(virtio.FVersion1 | 1<<3) {
		t.Fatal("FEATURES_OK refused for offered features")
	}
	// Features are fixed after FEATURES_OK.
	g.setDriverFeatures(virtio.FVersion1)
	g.w32(g.common+ccDriverFeatureSelect, 0)
	if v := g.r32(g.common + ccDriverFeature); v != 1<<3 {
		t.Fatalf("driver features changed after FEATURES_OK: %#x", v)
	}
}

func TestActivateNotifyReset(t *testing.T) {
	g, dev, _ := fakeSetup(t, 2)
	if !g.negotiate(virtio.FVersion1 | virtio.FEventIdx) {
		t.Fatal("negotiation failed")
	}
	g.setupQueue(1, 16, 0x10000, 0x11000, 0x12000, NoVector)
	g.w16(g.common+ccQueueSelect, 1)
	if g.r32(g.common+ccQueueDesc) != 0x10000 || g.r32(g.common+ccQueueDesc+4) != 0 || g.r16(g.common+ccQueueEnable) != 1 {
		t.Fatal("queue registers do not read back")
	}
	// A kick before DRIVER_OK goes nowhere.
	g.w16(g.notify+1*NotifyMultiplier, 1)
	g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK | virtio.StatusDriverOK)
	a, n := dev.lastActivation()
	if n != 1 || a.Features != virtio.FVersion1|virtio.FEventIdx || len(a.Queues) != 2 || a.Queues[0] != nil || a.Queues[1] == nil {
		t.Fatalf("activation %d: %+v", n, a)
	}
	if a.Queues[1].Size() != 16 {
		t.Fatalf("queue size %d", a.Queues[1].Size())
	}
	// Queue registers are frozen after DRIVER_OK.
	g.w16(g.common+ccQueueSize, 4)
	if g.r16(g.common+ccQueueSize) != 16 {
		t.Fatal("queue size changed after DRIVER_OK")
	}
	g.w16(g.notify+1*NotifyMultiplier, 1)
	select {
	case q := <-dev.notifyCh:
		if q != 1 {
			t.Fatalf("notify for queue %d", q)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("kick did not reach the device")
	}
	dev.mu.Lock()
	if len(dev.notified) != 1 {
		t.Fatalf("device notified %v; the kick before DRIVER_OK must be dropped", dev.notified)
	}
	dev.mu.Unlock()
	// Reset.
	g.setStatus(0)
	if g.status() != 0 || dev.resets == 0 {
		t.Fatalf("after reset: status %#x, device resets %d", g.status(), dev.resets)
	}
	g.w16(g.common+ccQueueSelect, 1)
	if g.r16(g.common+ccQueueEnable) != 0 || g.r16(g.common+ccQueueSize) != 64 || g.r32(g.common+ccQueueDesc) != 0 {
		t.Fatal("queue registers not reset")
	}
	if g.r16(g.common+ccQueueMSIXVector) != NoVector {
		t.Fatal("queue vector not reset")
	}
}

func TestBadQueueNeedsReset(t *testing.T) {
	g, dev, ints := fakeSetup(t, 1)
	ints.vecs[1].fired = make(chan struct{}, 4)
	g.programVector(1, 0xfee00000, 0x41)
	g.msixControl(true, false)
	g.negotiate(virtio.FVersion1)
	g.w16(g.common+ccMSIXConfig, 1)
	if g.r16(g.common+ccMSIXConfig) != 1 {
		t.Fatal("msix_config does not read back")
	}
	g.setupQueue(0, 16, 0x10008, 0x11000, 0x12000, NoVector) // descriptor table misaligned
	if g.status()&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatalf("status %#x lacks DEVICE_NEEDS_RESET", g.status())
	}
	if ints.vecs[1].count() != 1 {
		t.Fatalf("config vector fired %d times; want 1", ints.vecs[1].count())
	}
	g.setStatus(g.status() | virtio.StatusDriverOK)
	if _, n := dev.lastActivation(); n != 0 {
		t.Fatal("a failed device was activated")
	}
	// The driver cannot clear the bit; a reset does.
	g.setStatus(virtio.StatusAcknowledge)
	if g.status()&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatal("driver cleared DEVICE_NEEDS_RESET")
	}
	g.setStatus(0)
	if g.status() != 0 {
		t.Fatalf("status %#x after reset", g.status())
	}
}

func TestDriverOKWithoutFeaturesOK(t *testing.T) {
	g, dev, _ := fakeSetup(t, 1)
	g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusDriverOK)
	if _, n := dev.lastActivation(); n != 0 || g.status()&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatalf("DRIVER_OK without FEATURES_OK: %d activations, status %#x", n, g.status())
	}
}

func TestDeviceFailureSetsNeedsReset(t *testing.T) {
	g, dev, _ := fakeSetup(t, 1)
	g.negotiate(virtio.FVersion1)
	g.setupQueue(0, 16, 0x10000, 0x11000, 0x12000, NoVector)
	g.setStatus(g.status() | virtio.StatusDriverOK)
	a, _ := dev.lastActivation()
	a.Fail(queue.Guestf(queue.BadRequest, "a test failure"))
	if g.status()&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatal("device failure did not set DEVICE_NEEDS_RESET")
	}
	// INTx path: MSI-X is off, so the config change shows in the ISR.
	if isr := g.r8(g.isr); isr&isrConfig == 0 {
		t.Fatalf("ISR %#x lacks the configuration bit", isr)
	}
}

func TestMSIX(t *testing.T) {
	g, _, ints := fakeSetup(t, 2)
	v0 := ints.vecs[0]
	g.programVector(0, 0xfee01000, 0x4021)
	if v0.addr != 0xfee01000 || v0.data != 0x4021 || !v0.masked {
		t.Fatalf("vector 0 programmed %#x/%#x masked %v before MSI-X is enabled", v0.addr, v0.data, v0.masked)
	}
	if e := g.r32(msixTableOffset + msixEntryData); e != 0x4021 {
		t.Fatalf("table data reads %#x", e)
	}
	g.msixControl(true, false)
	if v0.masked {
		t.Fatal("vector 0 still masked after MSI-X enable")
	}
	g.w16(g.common+ccQueueSelect, 1)
	g.w16(g.common+ccQueueMSIXVector, 0)
	if g.r16(g.common+ccQueueMSIXVector) != 0 {
		t.Fatal("queue vector does not read back")
	}
	g.w16(g.common+ccQueueMSIXVector, 3) // table has 3 entries: 0..2
	if g.r16(g.common+ccQueueMSIXVector) != NoVector {
		t.Fatal("out-of-range vector not refused with NO_VECTOR")
	}
	g.w16(g.common+ccQueueMSIXVector, 0)
	g.tr.Signal(1)
	if v0.count() != 1 {
		t.Fatalf("vector 0 fired %d times", v0.count())
	}
	// Function mask: the interrupt becomes pending, then fires on unmask.
	g.msixControl(true, true)
	g.tr.Signal(1)
	if v0.count() != 1 || g.r8(msixPBAOffset)&1 == 0 {
		t.Fatalf("masked vector fired (%d) or PBA %#x not pending", v0.count(), g.r8(msixPBAOffset))
	}
	g.msixControl(true, false)
	if v0.count() != 2 || g.r8(msixPBAOffset)&1 != 0 {
		t.Fatalf("pending vector not delivered on unmask: %d, PBA %#x", v0.count(), g.r8(msixPBAOffset))
	}
	// Entry mask works the same way.
	g.w32(msixTableOffset+msixEntryCtrl, 1)
	g.tr.Signal(1)
	if v0.count() != 2 {
		t.Fatal("entry-masked vector fired")
	}
	g.w32(msixTableOffset+msixEntryCtrl, 0)
	if v0.count() != 3 {
		t.Fatal("entry unmask did not deliver the pending interrupt")
	}
	// A queue with NO_VECTOR gets no interrupt.
	g.tr.Signal(0)
	for i, v := range ints.vecs[1:] {
		if v.count() != 0 {
			t.Fatalf("vector %d fired", i+1)
		}
	}
	if lvl, _ := ints.intx.get(); lvl {
		t.Fatal("INTx raised while MSI-X is on")
	}
}

func TestINTxAndISR(t *testing.T) {
	g, _, ints := fakeSetup(t, 1)
	g.tr.Signal(0)
	if lvl, _ := ints.intx.get(); !lvl {
		t.Fatal("INTx not raised")
	}
	if g.cfg16(pci.StatusOffset)&(1<<3) == 0 {
		t.Fatal("PCI status Interrupt Status bit not set")
	}
	if isr := g.r8(g.isr); isr != isrQueue {
		t.Fatalf("ISR %#x; want 1", isr)
	}
	if lvl, _ := ints.intx.get(); lvl {
		t.Fatal("INTx still high after the ISR read")
	}
	if isr := g.r8(g.isr); isr != 0 {
		t.Fatalf("ISR %#x after a read; want 0", isr)
	}
	// INTx Disable in the command register holds the line low.
	g.setCfg16(pci.CommandOffset, pci.CommandMemory|pci.CommandIntxDisable)
	g.tr.Signal(0)
	if lvl, _ := ints.intx.get(); lvl {
		t.Fatal("INTx raised while disabled")
	}
	g.setCfg16(pci.CommandOffset, pci.CommandMemory)
	if lvl, _ := ints.intx.get(); !lvl {
		t.Fatal("pending ISR not raised when INTx is re-enabled")
	}
}

func TestPCICfgAccess(t *testing.T) {
	g, dev, _ := fakeSetup(t, 1)
	base := g.pciCfgCap
	g.tr.WriteConfig(base+4, []byte{0}) // bar 0
	g.setCfg32(base+8, uint32(g.common+ccDeviceFeature))
	g.setCfg32(base+12, 4)
	g.w32(g.common+ccDeviceFeatureSelect, 0)
	if v := g.cfg32(base + 16); v != uint32(dev.features) {
		t.Fatalf("PCI_CFG read %#x; want %#x", v, uint32(dev.features))
	}
	// A write through the window.
	g.setCfg32(base+8, uint32(g.common+ccQueueSelect))
	g.setCfg32(base+12, 2)
	g.tr.WriteConfig(base+16, []byte{0, 0, 0, 0})
	// Bad length: ignored, reads zero.
	g.setCfg32(base+12, 3)
	if v := g.cfg32(base + 16); v != 0 {
		t.Fatalf("PCI_CFG with length 3 read %#x", v)
	}
}

// fakeBinder records ioeventfd bindings.
type fakeBinder struct {
	bound map[uint64]int // gpa -> fd
	calls int
}

func (b *fakeBinder) BindNotify(gpa uint64, length uint32, q uint16, fd int) (func() error, error) {
	if length != 2 {
		return nil, errors.New("unexpected length")
	}
	b.bound[gpa] = fd
	b.calls++
	return func() error { delete(b.bound, gpa); return nil }, nil
}

func TestIoeventfdNotify(t *testing.T) {
	dev := newFakeDevice(2)
	binder := &fakeBinder{bound: map[uint64]int{}}
	var changes []pci.BARChange
	g := newGuest(t, Config{Device: dev, Mem: newTestMem(t), Interrupts: &fakeInterrupts{}, Notify: binder,
		OnBARChange: func(c pci.BARChange) { changes = append(changes, c) }})
	cs := g.tr.ConfigSpace()
	if err := cs.SetBARAddress(0, 0xe000_0000); err != nil {
		t.Fatal(err)
	}
	cs.SetCommand(pci.CommandMemory)
	if len(changes) != 1 || !changes[0].New.Mapped {
		t.Fatalf("BAR changes seen by the VMM hook: %+v", changes)
	}
	fd, ok := binder.bound[0xe000_0000+notifyOffset+NotifyMultiplier]
	if !ok || len(binder.bound) != 2 {
		t.Fatalf("bindings %v", binder.bound)
	}
	// The kernel would signal the eventfd on a guest write.
	if _, err := writeEventfd(fd); err != nil {
		t.Fatal(err)
	}
	select {
	case q := <-dev.notifyCh:
		if q != 1 {
			t.Fatalf("eventfd for queue 1 notified queue %d", q)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("eventfd signal did not reach the device")
	}
	// The guest moves the BAR: bindings follow.
	g.setCfg32(pci.BAR0Offset, 0xd000_0000)
	if _, ok := binder.bound[0xd000_0000+notifyOffset]; !ok || len(binder.bound) != 2 {
		t.Fatalf("bindings after the move: %v", binder.bound)
	}
	// Decode off: unbound.
	g.setCfg16(pci.CommandOffset, 0)
	if len(binder.bound) != 0 {
		t.Fatalf("bindings with decode off: %v", binder.bound)
	}
	if err := g.tr.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeEventfd(fd int) (int, error) {
	f := os.NewFile(uintptr(dupFD(fd)), "test-eventfd")
	defer f.Close()
	return f.Write(binary.LittleEndian.AppendUint64(nil, 1))
}

// TestBlkEndToEnd drives virtio-blk through the PCI transport as Linux
// would: capabilities, features, MSI-X, a queue, DRIVER_OK, a write and a
// read request kicked through the notify register.
func TestBlkEndToEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	dev, err := blk.Open(blk.Config{Path: path, Serial: "e2e"})
	if err != nil {
		t.Fatal(err)
	}
	mem := newTestMem(t)
	ints := &fakeInterrupts{}
	g := newGuest(t, Config{Device: dev, Mem: mem, Interrupts: ints})
	if id := g.cfg16(pci.DeviceIDOffset); id != 0x1042 {
		t.Fatalf("device ID %#x", id)
	}
	if capacity := uint64(g.r32(g.device)) | uint64(g.r32(g.device+4))<<32; capacity != 2048 {
		t.Fatalf("capacity %d", capacity)
	}
	g.programVector(0, 0xfee00000, 0x30)
	g.programVector(1, 0xfee00000, 0x31)
	g.msixControl(true, false)
	want := uint64(virtio.FVersion1 | virtio.FEventIdx | virtio.FIndirectDesc | blk.FFlush | blk.FSegMax)
	if g.deviceFeatures()&want != want {
		t.Fatalf("device features %#x", g.deviceFeatures())
	}
	if !g.negotiate(want) {
		t.Fatal("negotiation failed")
	}
	g.w16(g.common+ccMSIXConfig, 1)
	d := testdriver.New(mem, 128, 0x10000, 4<<20, 0)
	d.EventIdx = true
	g.setupQueue(0, 128, d.L.Desc, d.L.Avail, d.L.Used, 0)
	g.setStatus(g.status() | virtio.StatusDriverOK)
	if g.status()&virtio.StatusDeviceNeedsReset != 0 {
		t.Fatal("device needs reset after DRIVER_OK")
	}
	do := func(typ uint32, sector uint64, data []byte, in int) (byte, []byte) {
		t.Helper()
		segs, inAt, st := blkRequest(d, mem, typ, sector, data, uint64(in))
		before := ints.vecs[0].count()
		old := d.AvailIdx()
		d.AddIndirect(segs...)
		d.EnableInterrupts()
		if d.NeedKick(old) {
			g.w16(g.notify, 0)
		}
		deadline := time.After(10 * time.Second)
		for ints.vecs[0].count() == before {
			select {
			case <-ints.vecs[0].fired:
			case <-deadline:
				t.Fatal("no MSI-X interrupt for the request")
			}
		}
		if _, _, ok := d.Used(); !ok {
			t.Fatal("interrupt without a used buffer")
		}
		s, _ := mem.Slice(st, 1)
		var out []byte
		if in > 0 {
			b, _ := mem.Slice(inAt, uint64(in))
			out = append(out, b...)
		}
		return s[0], out
	}
	data := bytes.Repeat([]byte("corral!!"), 512)
	if st, _ := do(blk.TypeOut, 10, data, 0); st != blk.StatusOK {
		t.Fatalf("write status %d", st)
	}
	st, got := do(blk.TypeIn, 10, nil, len(data))
	if st != blk.StatusOK || !bytes.Equal(got, data) {
		t.Fatalf("read back status %d, equal %v", st, bytes.Equal(got, data))
	}
	if st, id := do(blk.TypeGetID, 0, nil, 20); st != blk.StatusOK || string(id[:3]) != "e2e" {
		t.Fatalf("GET_ID %d %q", st, id)
	}
	// Reset with the device running, then the image is consistent on disk.
	g.setStatus(0)
	b, _ := os.ReadFile(path)
	if !bytes.Equal(b[10*512:10*512+len(data)], data) {
		t.Fatal("written data not in the image after reset")
	}
	// A malformed request fails the device: DEVICE_NEEDS_RESET and a config interrupt.
	g.negotiate(want)
	g.w16(g.common+ccMSIXConfig, 1)
	d = testdriver.New(mem, 128, 0x10000, 4<<20, 0)
	d.EventIdx = true
	g.setupQueue(0, 128, d.L.Desc, d.L.Avail, d.L.Used, 0)
	g.setStatus(g.status() | virtio.StatusDriverOK)
	cfgBefore := ints.vecs[1].count()
	d.Add(testdriver.Seg{Addr: d.Alloc(8, 8), Len: 8}) // no status byte, short header
	g.w16(g.notify, 0)
	deadline := time.After(10 * time.Second)
	for ints.vecs[1].count() == cfgBefore {
		select {
		case <-ints.vecs[1].fired:
		case <-deadline:
			t.Fatal("no configuration interrupt after a malformed request")
		}
	}
	if g.status()&virtio.StatusDeviceNeedsReset == 0 {
		t.Fatal("DEVICE_NEEDS_RESET not set")
	}
}

// blkRequest lays out a virtio-blk request in guest memory: the header,
// the data to write (if any), in bytes to read (if any) and the status
// byte. It returns the chain's segments and where the read data and the
// status go.
func blkRequest(d *testdriver.Driver, mem *guestmem.Memory, typ uint32, sector uint64, data []byte, in uint64) (segs []testdriver.Seg, inAt, st uint64) {
	hdr := d.Alloc(16, 16)
	var hb [16]byte
	binary.LittleEndian.PutUint32(hb[0:], typ)
	binary.LittleEndian.PutUint64(hb[8:], sector)
	mem.WriteAt(hb[:], hdr)
	segs = []testdriver.Seg{{Addr: hdr, Len: 16}}
	if len(data) > 0 {
		a := d.Alloc(uint64(len(data)), 512)
		mem.WriteAt(data, a)
		segs = append(segs, testdriver.Seg{Addr: a, Len: uint32(len(data))})
	}
	if in > 0 {
		inAt = d.Alloc(in, 512)
		segs = append(segs, testdriver.Seg{Addr: inAt, Len: uint32(in), Write: true})
	}
	st = d.Alloc(1, 1)
	return append(segs, testdriver.Seg{Addr: st, Len: 1, Write: true}), inAt, st
}
