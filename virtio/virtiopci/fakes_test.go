package virtiopci

import (
	"context"
	"encoding/binary"
	"sync"
	"testing"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
)

// fakeVector records what the transport programs and how often it fires.
type fakeVector struct {
	mu       sync.Mutex
	addr     uint64
	data     uint32
	masked   bool
	updates  int
	triggers int
	closed   bool
	fired    chan struct{}
}

func (v *fakeVector) Update(addr uint64, data uint32, masked bool) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.addr, v.data, v.masked = addr, data, masked
	v.updates++
	return nil
}

func (v *fakeVector) Trigger() error {
	v.mu.Lock()
	v.triggers++
	v.mu.Unlock()
	select {
	case v.fired <- struct{}{}:
	default:
	}
	return nil
}

func (v *fakeVector) Close() error { v.mu.Lock(); v.closed = true; v.mu.Unlock(); return nil }

func (v *fakeVector) count() int { v.mu.Lock(); defer v.mu.Unlock(); return v.triggers }

type fakeINTx struct {
	mu    sync.Mutex
	level bool
	rises int
}

func (l *fakeINTx) SetLevel(high bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if high && !l.level {
		l.rises++
	}
	l.level = high
	return nil
}

func (l *fakeINTx) get() (bool, int) { l.mu.Lock(); defer l.mu.Unlock(); return l.level, l.rises }

type fakeInterrupts struct {
	vecs []*fakeVector
	intx fakeINTx
}

func (f *fakeInterrupts) NewMSIVector() (MSIVector, error) {
	v := &fakeVector{fired: make(chan struct{}, 64)}
	f.vecs = append(f.vecs, v)
	return v, nil
}

func (f *fakeInterrupts) INTx() devices.IRQLine { return &f.intx }

// fakeDevice is a virtio.Device that records what the transport does.
type fakeDevice struct {
	mu        sync.Mutex
	nq        int
	features  uint64
	config    []byte
	activated []virtio.Activation
	notified  []int
	resets    int
	closed    bool
	notifyCh  chan int
}

func newFakeDevice(nq int) *fakeDevice {
	return &fakeDevice{nq: nq, features: virtio.FVersion1 | virtio.FEventIdx | 1<<3,
		config: []byte{1, 2, 3, 4, 5, 6, 7, 8}, notifyCh: make(chan int, 64)}
}

func (d *fakeDevice) Type() virtio.DeviceType { return virtio.TypeNet }
func (d *fakeDevice) Features() uint64        { return d.features }
func (d *fakeDevice) NumQueues() int          { return d.nq }
func (d *fakeDevice) MaxQueueSize() uint16    { return 64 }
func (d *fakeDevice) ConfigSize() int         { return len(d.config) }
func (d *fakeDevice) ReadConfig(off int, p []byte) {
	clear(p)
	if off < len(d.config) {
		copy(p, d.config[off:])
	}
}
func (d *fakeDevice) WriteConfig(off int, p []byte) {}
func (d *fakeDevice) Activate(ctx context.Context, a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.activated = append(d.activated, a)
	return nil
}
func (d *fakeDevice) Notify(q int) {
	d.mu.Lock()
	d.notified = append(d.notified, q)
	d.mu.Unlock()
	select {
	case d.notifyCh <- q:
	default:
	}
}
func (d *fakeDevice) Reset() error { d.mu.Lock(); d.resets++; d.mu.Unlock(); return nil }
func (d *fakeDevice) Close() error { d.mu.Lock(); d.closed = true; d.mu.Unlock(); return nil }

func (d *fakeDevice) lastActivation() (virtio.Activation, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.activated) == 0 {
		return virtio.Activation{}, 0
	}
	return d.activated[len(d.activated)-1], len(d.activated)
}

// guest is a test driver's view of the function: configuration space
// accesses and BAR accesses (as MMIO through the BAR region).
type guest struct {
	t   testing.TB
	tr  *Transport
	bar devices.Device
	// offsets of the structures, found through the capabilities
	common, isr, device, notify uint64
	notifyMult                  uint32
	msixCap, pciCfgCap          int
}

func newTestMem(t testing.TB) *guestmem.Memory {
	m, err := guestmem.Allocate(guestmem.Range{GPA: 0, Size: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func (g *guest) cfg8(off int) uint8 { var b [1]byte; g.tr.ReadConfig(off, b[:]); return b[0] }
func (g *guest) cfg16(off int) uint16 {
	var b [2]byte
	g.tr.ReadConfig(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}
func (g *guest) cfg32(off int) uint32 {
	var b [4]byte
	g.tr.ReadConfig(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}
func (g *guest) setCfg16(off int, v uint16) {
	g.tr.WriteConfig(off, binary.LittleEndian.AppendUint16(nil, v))
}
func (g *guest) setCfg32(off int, v uint32) {
	g.tr.WriteConfig(off, binary.LittleEndian.AppendUint32(nil, v))
}

func (g *guest) r8(off uint64) uint8 { var b [1]byte; g.bar.Read(off, b[:]); return b[0] }
func (g *guest) r16(off uint64) uint16 {
	var b [2]byte
	g.bar.Read(off, b[:])
	return binary.LittleEndian.Uint16(b[:])
}
func (g *guest) r32(off uint64) uint32 {
	var b [4]byte
	g.bar.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}
func (g *guest) w8(off uint64, v uint8) { g.bar.Write(off, []byte{v}) }
func (g *guest) w16(off uint64, v uint16) {
	g.bar.Write(off, binary.LittleEndian.AppendUint16(nil, v))
}
func (g *guest) w32(off uint64, v uint32) {
	g.bar.Write(off, binary.LittleEndian.AppendUint32(nil, v))
}

// w64 writes a 64-bit register as Linux does: low half, then high half.
func (g *guest) w64(off uint64, v uint64) {
	g.w32(off, uint32(v))
	g.w32(off+4, uint32(v>>32))
}

// findCaps walks the capability list as a driver does.
func (g *guest) findCaps() {
	g.t.Helper()
	seen := map[uint8]bool{}
	for p, n := int(g.cfg8(pci.CapabilitiesOffset)), 0; p != 0; p, n = int(g.cfg8(p+1)), n+1 {
		if n > 48 {
			g.t.Fatal("capability list loops")
		}
		switch g.cfg8(p) {
		case capIDMSIX:
			g.msixCap = p
		case capIDVendor:
			typ := g.cfg8(p + 3)
			seen[typ] = true
			if bar := g.cfg8(p + 4); bar != 0 && typ != CfgPCI {
				g.t.Fatalf("cfg_type %d in BAR %d", typ, bar)
			}
			off := uint64(g.cfg32(p + 8))
			switch typ {
			case CfgCommon:
				g.common = off
			case CfgNotify:
				g.notify = off
				g.notifyMult = g.cfg32(p + 16)
			case CfgISR:
				g.isr = off
			case CfgDevice:
				g.device = off
			case CfgPCI:
				g.pciCfgCap = p
			}
		}
	}
	for _, typ := range []uint8{CfgCommon, CfgNotify, CfgISR, CfgDevice, CfgPCI} {
		if !seen[typ] {
			g.t.Fatalf("no capability of cfg_type %d", typ)
		}
	}
	if g.msixCap == 0 {
		g.t.Fatal("no MSI-X capability")
	}
}

func newGuest(t testing.TB, cfg Config) *guest {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	g := &guest{t: t, tr: tr, bar: tr.BAR()}
	g.findCaps()
	return g
}

func (g *guest) status() uint8     { return g.r8(g.common + ccDeviceStatus) }
func (g *guest) setStatus(v uint8) { g.w8(g.common+ccDeviceStatus, v) }
func (g *guest) deviceFeatures() uint64 {
	g.w32(g.common+ccDeviceFeatureSelect, 0)
	lo := g.r32(g.common + ccDeviceFeature)
	g.w32(g.common+ccDeviceFeatureSelect, 1)
	hi := g.r32(g.common + ccDeviceFeature)
	return uint64(hi)<<32 | uint64(lo)
}
func (g *guest) setDriverFeatures(f uint64) {
	g.w32(g.common+ccDriverFeatureSelect, 0)
	g.w32(g.common+ccDriverFeature, uint32(f))
	g.w32(g.common+ccDriverFeatureSelect, 1)
	g.w32(g.common+ccDriverFeature, uint32(f>>32))
}

// negotiate runs the first steps of driver initialisation and returns
// whether the device accepted the features.
func (g *guest) negotiate(f uint64) bool {
	g.setStatus(0)
	g.setStatus(virtio.StatusAcknowledge)
	g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver)
	g.setDriverFeatures(f)
	g.setStatus(virtio.StatusAcknowledge | virtio.StatusDriver | virtio.StatusFeaturesOK)
	return g.status()&virtio.StatusFeaturesOK != 0
}

// setupQueue programs queue q as a driver does and enables it.
func (g *guest) setupQueue(q uint16, size uint16, desc, avail, used uint64, vector uint16) {
	g.w16(g.common+ccQueueSelect, q)
	g.w16(g.common+ccQueueSize, size)
	g.w16(g.common+ccQueueMSIXVector, vector)
	g.w64(g.common+ccQueueDesc, desc)
	g.w64(g.common+ccQueueDriver, avail)
	g.w64(g.common+ccQueueDevice, used)
	g.w16(g.common+ccQueueEnable, 1)
}

// enableMSIX programs table entry i and enables MSI-X.
func (g *guest) programVector(i int, addr uint64, data uint32) {
	e := msixTableOffset + uint64(i)*msixEntrySize
	g.w32(e+msixEntryAddrLo, uint32(addr))
	g.w32(e+msixEntryAddrHi, uint32(addr>>32))
	g.w32(e+msixEntryData, data)
	g.w32(e+msixEntryCtrl, 0)
}

func (g *guest) msixControl(enable, mask bool) {
	v := g.cfg16(g.msixCap + 2)
	v &^= msixControlEnable | msixControlFuncMask
	if enable {
		v |= msixControlEnable
	}
	if mask {
		v |= msixControlFuncMask
	}
	g.setCfg16(g.msixCap+2, v)
}
