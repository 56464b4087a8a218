// Package pci is the virtio 1.x PCI transport ("modern" only: no legacy I/O
// BAR), Virtio 1.2 §4.1. It puts a transport-independent virtio.Device on
// the PCI bus: vendor 0x1AF4, device 0x1040 + type, revision 1; one 64-bit
// memory BAR holding the common configuration, ISR, device configuration
// and notify structures (found through vendor-specific capabilities) and the
// MSI-X table and PBA; plus the PCI configuration access capability.
//
// Feature negotiation requires VIRTIO_F_VERSION_1 and refuses FEATURES_OK
// when the driver accepted bits the device did not offer. Once FEATURES_OK
// is set the features are fixed until a reset: driver_feature writes are
// ignored, and so is a device_status write that would clear a bit (only
// writing 0 does that), as Virtio 1.2 §2.1.2 and §3.1.1 require. At DRIVER_OK the
// queues the driver enabled are handed to the device. A guest protocol
// error (a bad queue layout, a malformed request) sets DEVICE_NEEDS_RESET
// and raises a configuration-change interrupt; writing 0 to device_status
// resets the device and its queues. Guest faults are counted (Counters)
// and logged at most once a second per kind.
//
// Interrupts go through interfaces the VMM implements: one MSIVector per
// MSI-X table entry (queues and configuration), or INTx with the ISR
// register (read clears) when the driver does not enable MSI-X. Queue
// notifications arrive as writes to the notify region through the MMIO
// bus, and optionally as ioeventfds the VMM binds (NotifyBinder) so a kick
// does not go through the vCPU thread.
//
// Wiring in the VMM:
//
//	t, err := pci.New(pci.Config{Device: blkdev, Mem: mem, Interrupts: ints,
//		Notify: binder, OnBARChange: mapper.Update})   // mapper: devices/pci.BusMapper over t.BAR()
//	pci.AssignBARs(t.ConfigSpace(), memAlloc, nil)
//	hostBridge.Add(t)
package virtiopci

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Config describes one virtio PCI function.
type Config struct {
	// Device is the virtio device model (virtio/blk, ...).
	Device virtio.Device
	// Mem is guest RAM, where the driver places the queues.
	Mem *guestmem.Memory
	// Interrupts gives MSI-X vectors and the INTx line.
	Interrupts Interrupts
	// Notify, if not nil, binds ioeventfds to the queues' notify registers.
	Notify NotifyBinder
	// OnBARChange, if not nil, is called for every BAR mapping change
	// (typically a devices/pci.BusMapper's Update over BAR()).
	OnBARChange func(pci.BARChange)
	// ClassCode is the PCI class; 0 picks one from the device type.
	ClassCode uint32
	// SubsystemID is the PCI subsystem ID; 0 means SubsystemIDMin.
	SubsystemID uint16
	// InterruptLine is the IRQ the INTA# pin is routed to (for the guest's
	// information; the VMM wires Interrupts.INTx to it).
	InterruptLine uint8
	// Logger receives guest errors and interrupt faults (rate limited);
	// nil discards.
	Logger *slog.Logger

	now func() time.Time // the rate limiter's clock; nil is time.Now (tests set it)
}

// queueRegs are the per-queue registers of the common configuration.
type queueRegs struct {
	size    uint16
	enabled bool
	desc    uint64
	driver  uint64
	device  uint64
}

// Transport is one virtio PCI function. It implements devices/pci.Device
// (configuration space); BAR() is its memory BAR region.
type Transport struct {
	dev    virtio.Device
	mem    *guestmem.Memory
	log    *guestlog.Logger
	counts counters
	cs     *pci.ConfigSpace
	irq    *irqState
	notify *notifier
	onBAR  func(pci.BARChange)

	msixCap   int // config-space offset of the MSI-X capability
	pciCfgCap int // config-space offset of the PCI_CFG capability
	nq        int
	offered   uint64

	ctx    context.Context
	cancel context.CancelFunc

	// mu guards the common configuration below. Lock order: mu, then
	// irq.mu. Device workers only take irq.mu, so mu may be held while
	// the device stops them.
	mu          sync.Mutex
	devFeatSel  uint32
	drvFeatSel  uint32
	drvFeatures uint64
	status      uint8
	configGen   uint8
	queueSel    uint16
	queues      []queueRegs
	active      bool
	closed      bool
	needsReset  atomic.Bool
	// running are the queues handed to the device at activation (nil
	// where not enabled), for SaveState; nil while inactive.
	running []*queue.Queue
	// paused: Pause was called and Resume not yet; an activation
	// meanwhile starts the device paused. restored: RestoreState ran and
	// the next Resume signals every active queue once.
	paused   bool
	restored bool
}

// New builds the function: configuration space with the virtio
// capabilities and MSI-X, one MSI-X vector per queue plus one for
// configuration changes, and the BAR (at address 0 until assigned).
func New(cfg Config) (*Transport, error) {
	d := cfg.Device
	if d == nil || cfg.Mem == nil || cfg.Interrupts == nil {
		return nil, errors.New("virtio-pci: config needs a Device, guest memory and Interrupts")
	}
	nq := d.NumQueues()
	if nq < 1 || nq > MaxQueues {
		return nil, fmt.Errorf("virtio-pci: device has %d queues (want 1..%d)", nq, MaxQueues)
	}
	if d.ConfigSize() > deviceMax {
		return nil, fmt.Errorf("virtio-pci: device configuration of %d bytes (at most %d)", d.ConfigSize(), deviceMax)
	}
	if d.Features()&virtio.FVersion1 == 0 {
		return nil, errors.New("virtio-pci: device does not offer VIRTIO_F_VERSION_1")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	class := cfg.ClassCode
	if class == 0 {
		switch d.Type() {
		case virtio.TypeNet:
			class = 0x020000 // network controller, Ethernet
		case virtio.TypeBlock:
			class = 0x018000 // mass storage, other
		default:
			class = 0xff0000 // unassigned class
		}
	}
	sub := cfg.SubsystemID
	if sub == 0 {
		sub = SubsystemIDMin
	}
	glog := guestlog.New(log, cfg.now)
	t := &Transport{dev: d, mem: cfg.Mem, log: glog, onBAR: cfg.OnBARChange, nq: nq, offered: d.Features()}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	t.cs = pci.NewConfigSpace(pci.Header{
		VendorID: VendorID, DeviceID: DeviceIDBase + uint16(d.Type()), ClassCode: class, Revision: Revision,
		SubsystemVendorID: VendorID, SubsystemID: sub, InterruptPin: 1, InterruptLine: cfg.InterruptLine,
	})
	if err := t.cs.AddBAR(barIndex, pci.BAR{Kind: pci.BARMem64, Size: barSize}); err != nil {
		return nil, fmt.Errorf("virtio-pci: %w", err)
	}
	if err := t.addCapabilities(); err != nil {
		return nil, err
	}
	irq, err := newIRQState(nq+1, cfg.Interrupts, nq, t.cs.SetInterruptStatus, glog)
	if err != nil {
		return nil, fmt.Errorf("virtio-pci: MSI-X vectors: %w", err)
	}
	t.irq = irq
	t.notify = newNotifier(cfg.Notify, nq, d, glog)
	t.queues = make([]queueRegs, nq)
	t.resetQueues()
	t.cs.OnBARChange(t.barChanged)
	return t, nil
}

// addCapabilities lays out the capability list: COMMON, NOTIFY, ISR,
// DEVICE, PCI_CFG, then MSI-X.
func (t *Transport) addCapabilities() error {
	vcap := func(cfgType uint8, off, length uint32, extra int) ([]byte, []byte) {
		b := make([]byte, capDataSize+extra)
		b[capLen] = uint8(2 + len(b))
		b[capCfgType] = cfgType
		b[capBar] = barIndex
		binary.LittleEndian.PutUint32(b[capOffset:], off)
		binary.LittleEndian.PutUint32(b[capLength:], length)
		return b, nil
	}
	add := func(data, writable []byte) (int, error) {
		off, err := t.cs.AddCapability(pci.Capability{ID: capIDVendor, Data: data, Writable: writable})
		if err != nil {
			return 0, fmt.Errorf("virtio-pci: capability: %w", err)
		}
		return off, nil
	}
	common, _ := vcap(CfgCommon, commonOffset, commonSize, 0)
	if _, err := add(common, nil); err != nil {
		return err
	}
	notify, _ := vcap(CfgNotify, notifyOffset, uint32(t.nq*NotifyMultiplier), 4)
	binary.LittleEndian.PutUint32(notify[capNotifyMult:], NotifyMultiplier)
	if _, err := add(notify, nil); err != nil {
		return err
	}
	isr, _ := vcap(CfgISR, isrOffset, isrSize, 0)
	if _, err := add(isr, nil); err != nil {
		return err
	}
	if n := t.dev.ConfigSize(); n > 0 {
		dev, _ := vcap(CfgDevice, deviceOffset, uint32(n), 0)
		if _, err := add(dev, nil); err != nil {
			return err
		}
	}
	// PCI_CFG: bar, offset, length and the data window are guest-writable.
	pcicfg, _ := vcap(CfgPCI, 0, 0, 4)
	pcicfg[capBar] = 0
	w := make([]byte, len(pcicfg))
	w[capBar] = 0xff
	for i := 0; i < 4; i++ {
		w[capOffset+i], w[capLength+i], w[capPCICfgData+i] = 0xff, 0xff, 0xff
	}
	off, err := add(pcicfg, w)
	if err != nil {
		return err
	}
	t.pciCfgCap = off

	msix := make([]byte, msixCapDataSize)
	binary.LittleEndian.PutUint16(msix[msixCapControl:], uint16(t.nq)) // table size - 1 = nq
	binary.LittleEndian.PutUint32(msix[msixCapTable:], msixTableOffset|barIndex)
	binary.LittleEndian.PutUint32(msix[msixCapPBA:], msixPBAOffset|barIndex)
	mw := make([]byte, msixCapDataSize)
	mw[msixCapControl+1] = 0xc0 // enable, function mask
	off, err = t.cs.AddCapability(pci.Capability{ID: capIDMSIX, Data: msix, Writable: mw})
	if err != nil {
		return fmt.Errorf("virtio-pci: MSI-X capability: %w", err)
	}
	t.msixCap = off
	return nil
}

// ConfigSpace returns the function's configuration space (for BAR
// assignment and the host bridge).
func (t *Transport) ConfigSpace() *pci.ConfigSpace { return t.cs }

// BAR returns the region for BAR 0, to put on the MMIO bus where the BAR
// points (devices/pci.BusMapper does that).
func (t *Transport) BAR() devices.Device { return barRegion{t} }

// BARSize is the size of BAR 0.
const BARSize = barSize

// ReadConfig implements devices/pci.Device.
func (t *Transport) ReadConfig(offset int, data []byte) {
	if t.inPCICfgData(offset, len(data)) {
		t.pciCfgAccess(data, false)
		return
	}
	t.cs.ReadConfig(offset, data)
}

// WriteConfig implements devices/pci.Device: it follows the MSI-X control
// and command register bits, and serves the PCI configuration access
// capability's data window.
func (t *Transport) WriteConfig(offset int, data []byte) {
	if t.inPCICfgData(offset, len(data)) {
		t.pciCfgAccess(data, true)
		return
	}
	t.cs.WriteConfig(offset, data)
	ctl := t.cs.Uint16(t.msixCap + 2 + msixCapControl)
	t.irq.setControl(ctl&msixControlEnable != 0, ctl&msixControlFuncMask != 0)
	t.irq.setINTxAllowed(t.cs.Command()&pci.CommandIntxDisable == 0)
}

func (t *Transport) inPCICfgData(offset, n int) bool {
	start := t.pciCfgCap + 2 + capPCICfgData
	return offset >= start && offset+n <= start+4
}

// pciCfgAccess reads or writes the BAR through the PCI_CFG capability: the
// driver set bar, offset and length (1, 2 or 4); data is the window.
func (t *Transport) pciCfgAccess(data []byte, write bool) {
	base := t.pciCfgCap + 2
	bar := t.cs.Uint8(base + capBar)
	off := uint64(t.cs.Uint32(base + capOffset))
	n := t.cs.Uint32(base + capLength)
	if bar != barIndex || (n != 1 && n != 2 && n != 4) || int(n) > len(data) || off%uint64(n) != 0 {
		if !write {
			clear(data)
		}
		return
	}
	if write {
		t.barWrite(off, data[:n])
		return
	}
	clear(data)
	t.barRead(off, data[:n])
}

// barChanged follows BAR 0: the VMM's mapping first, then the notify
// ioeventfds.
func (t *Transport) barChanged(ch pci.BARChange) {
	if t.onBAR != nil {
		t.onBAR(ch)
	}
	if ch.Index != barIndex {
		return
	}
	t.notify.rebind(ch.New.Mapped, ch.New.Addr+notifyOffset)
}

// Signal implements virtio.Interrupt for the device: it raises queue q's
// interrupt (its MSI-X vector, or ISR bit 0 and INTx).
func (t *Transport) Signal(q int) error {
	t.irq.signalQueue(q)
	return nil
}

// fail marks the device as needing a reset after a guest error.
func (t *Transport) fail(err error) {
	if t.needsReset.Swap(true) {
		return
	}
	t.counts.inc(cDeviceFailures)
	t.log.Warn("virtio-pci: device needs reset", "type", t.dev.Type(), "err", err)
	t.irq.signalConfig()
}

// Counters returns a snapshot of the function's guest-fault counters.
func (t *Transport) Counters() Counters { return t.counts.snapshot() }

// NeedsReset reports whether the device is in the DEVICE_NEEDS_RESET state.
func (t *Transport) NeedsReset() bool { return t.needsReset.Load() }

// Close stops the device and releases the interrupt routes and ioeventfds.
// The device itself (its backend) is closed too.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	t.active = false
	t.mu.Unlock()
	t.cancel()
	errs := []error{t.dev.Close(), t.notify.close(), t.irq.close()}
	return errors.Join(errs...)
}

// queueOptions are the ring options the negotiated features imply.
func (t *Transport) queueOptions() queue.Options {
	return virtio.QueueOptions(t.drvFeatures, t.dev.MaxQueueSize())
}

var _ pci.Device = (*Transport)(nil)
var _ virtio.Interrupt = (*Transport)(nil)
