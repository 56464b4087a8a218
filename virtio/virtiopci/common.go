package virtiopci

import (
	"encoding/binary"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// barRegion is BAR 0 as a devices.Device.
type barRegion struct{ t *Transport }

// Read implements devices.Device.
func (r barRegion) Read(offset uint64, data []byte) { clear(data); r.t.barRead(offset, data) }

// Write implements devices.Device.
func (r barRegion) Write(offset uint64, data []byte) { r.t.barWrite(offset, data) }

// within reports whether [off, off+n) lies in [base, base+size).
func within(off uint64, n int, base, size uint64) bool {
	return off >= base && off-base <= size && uint64(n) <= size-(off-base)
}

// barRead serves a read of n = len(data) bytes at off; data is zeroed.
func (t *Transport) barRead(off uint64, data []byte) {
	n := len(data)
	switch {
	case within(off, n, commonOffset, commonSize):
		t.commonRead(off-commonOffset, data)
	case within(off, n, isrOffset, isrSize):
		if off == isrOffset {
			data[0] = t.irq.readISR()
		}
	case within(off, n, deviceOffset, uint64(t.dev.ConfigSize())):
		t.dev.ReadConfig(int(off-deviceOffset), data)
	case within(off, n, msixTableOffset, uint64(len(t.irq.table))*msixEntrySize):
		t.irq.tableRead(off-msixTableOffset, data)
	case within(off, n, msixPBAOffset, msixPBAMax):
		t.irq.pbaRead(off-msixPBAOffset, data)
	}
}

// barWrite serves a guest write at off.
func (t *Transport) barWrite(off uint64, data []byte) {
	n := len(data)
	switch {
	case within(off, n, commonOffset, commonSize):
		t.commonWrite(off-commonOffset, data)
	case within(off, n, notifyOffset, uint64(t.nq)*NotifyMultiplier):
		t.kick(int((off - notifyOffset) / NotifyMultiplier))
	case within(off, n, deviceOffset, uint64(t.dev.ConfigSize())):
		t.dev.WriteConfig(int(off-deviceOffset), data)
	case within(off, n, msixTableOffset, uint64(len(t.irq.table))*msixEntrySize):
		t.irq.tableWrite(off-msixTableOffset, data)
	}
}

// kick forwards a notify-region write for queue q to the device.
func (t *Transport) kick(q int) {
	t.mu.Lock()
	active := t.active
	t.mu.Unlock()
	if active {
		t.dev.Notify(q)
	}
}

// commonSnapshot renders the common configuration; mu held.
func (t *Transport) commonSnapshot() [commonSize]byte {
	var b [commonSize]byte
	le := binary.LittleEndian
	le.PutUint32(b[ccDeviceFeatureSelect:], t.devFeatSel)
	if t.devFeatSel < 2 {
		le.PutUint32(b[ccDeviceFeature:], uint32(t.offered>>(32*t.devFeatSel)))
	}
	le.PutUint32(b[ccDriverFeatureSelect:], t.drvFeatSel)
	if t.drvFeatSel < 2 {
		le.PutUint32(b[ccDriverFeature:], uint32(t.drvFeatures>>(32*t.drvFeatSel)))
	}
	le.PutUint16(b[ccMSIXConfig:], t.irq.configVector())
	le.PutUint16(b[ccNumQueues:], uint16(t.nq))
	st := t.status
	if t.needsReset.Load() {
		st |= virtio.StatusDeviceNeedsReset
	}
	b[ccDeviceStatus] = st
	b[ccConfigGeneration] = t.configGen
	le.PutUint16(b[ccQueueSelect:], t.queueSel)
	if q := int(t.queueSel); q < t.nq {
		r := t.queues[q]
		le.PutUint16(b[ccQueueSize:], r.size)
		le.PutUint16(b[ccQueueMSIXVector:], t.irq.queueVector(q))
		if r.enabled {
			le.PutUint16(b[ccQueueEnable:], 1)
		}
		le.PutUint16(b[ccQueueNotifyOff:], uint16(q))
		le.PutUint64(b[ccQueueDesc:], r.desc)
		le.PutUint64(b[ccQueueDriver:], r.driver)
		le.PutUint64(b[ccQueueDevice:], r.device)
	} else {
		le.PutUint16(b[ccQueueMSIXVector:], NoVector)
	}
	return b
}

func (t *Transport) commonRead(off uint64, data []byte) {
	t.mu.Lock()
	b := t.commonSnapshot()
	t.mu.Unlock()
	copy(data, b[off:])
}

// field is one register of the common configuration.
type field struct{ off, size uint64 }

// commonFields lists the registers in address order.
func commonFields() [16]field {
	return [16]field{
		{ccDeviceFeatureSelect, 4}, {ccDeviceFeature, 4}, {ccDriverFeatureSelect, 4}, {ccDriverFeature, 4},
		{ccMSIXConfig, 2}, {ccNumQueues, 2}, {ccDeviceStatus, 1}, {ccConfigGeneration, 1},
		{ccQueueSelect, 2}, {ccQueueSize, 2}, {ccQueueMSIXVector, 2}, {ccQueueEnable, 2}, {ccQueueNotifyOff, 2},
		{ccQueueDesc, 8}, {ccQueueDriver, 8}, {ccQueueDevice, 8},
	}
}

// commonWrite merges the written bytes into each register they touch (so
// 32-bit halves of the 64-bit queue addresses work) and applies it.
func (t *Transport) commonWrite(off uint64, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	end := off + uint64(len(data))
	for _, f := range commonFields() {
		if f.off >= end || f.off+f.size <= off {
			continue
		}
		cur := t.commonSnapshot()
		reg := cur[f.off : f.off+f.size]
		for i := range data {
			if o := off + uint64(i); o >= f.off && o < f.off+f.size {
				reg[o-f.off] = data[i]
			}
		}
		var v uint64
		for i := len(reg) - 1; i >= 0; i-- {
			v = v<<8 | uint64(reg[i])
		}
		t.setRegister(f.off, v)
	}
}

// setRegister applies a driver write of v to the register at off; mu held.
func (t *Transport) setRegister(off, v uint64) {
	q := int(t.queueSel)
	queueWritable := q < t.nq && t.status&virtio.StatusDriverOK == 0
	switch off {
	case ccDeviceFeatureSelect:
		t.devFeatSel = uint32(v)
	case ccDriverFeatureSelect:
		t.drvFeatSel = uint32(v)
	case ccDriverFeature:
		if t.status&virtio.StatusFeaturesOK != 0 {
			// Features are fixed once FEATURES_OK is set (Virtio 1.2
			// §3.1.1); so is the status bit, until a reset.
			t.counts.inc(cFeatureWritesIgnored)
			t.log.Warn("virtio-pci: guest wrote driver features after FEATURES_OK; ignored",
				"type", t.dev.Type(), "select", t.drvFeatSel, "value", guestlog.Hex(v))
			return
		}
		if t.drvFeatSel >= 2 {
			return // no feature bits there
		}
		shift := 32 * t.drvFeatSel
		t.drvFeatures = t.drvFeatures&^(0xffffffff<<shift) | v<<shift
	case ccMSIXConfig:
		t.irq.setConfigVector(uint16(v))
	case ccDeviceStatus:
		t.setStatus(uint8(v))
	case ccQueueSelect:
		t.queueSel = uint16(v)
	case ccQueueSize:
		if queueWritable && !t.queues[q].enabled {
			t.queues[q].size = uint16(v)
		}
	case ccQueueMSIXVector:
		if q < t.nq {
			t.irq.setQueueVector(q, uint16(v))
		}
	case ccQueueEnable:
		if queueWritable && v == 1 && !t.queues[q].enabled {
			t.enableQueue(q)
		}
	case ccQueueDesc:
		if queueWritable && !t.queues[q].enabled {
			t.queues[q].desc = v
		}
	case ccQueueDriver:
		if queueWritable && !t.queues[q].enabled {
			t.queues[q].driver = v
		}
	case ccQueueDevice:
		if queueWritable && !t.queues[q].enabled {
			t.queues[q].device = v
		}
	}
	// device_feature, num_queues, config_generation, queue_notify_off are
	// read-only.
}

func (t *Transport) layout(q int) queue.Layout {
	r := t.queues[q]
	return queue.Layout{Size: r.size, Desc: r.desc, Avail: r.driver, Used: r.device}
}

// enableQueue checks the driver's queue layout as it enables the queue; a
// bad one fails the device. mu held.
func (t *Transport) enableQueue(q int) {
	t.queues[q].enabled = true
	if _, err := queue.New(t.mem, t.layout(q), t.queueOptions()); err != nil {
		t.fail(err)
	}
}

// setStatus runs the device status state machine; mu held.
func (t *Transport) setStatus(v uint8) {
	if v == 0 {
		t.counts.inc(cResets)
		t.reset()
		return
	}
	v &^= virtio.StatusDeviceNeedsReset // device-owned bit
	old := t.status
	if old&^v != 0 {
		// The driver must not clear a status bit (Virtio 1.2 §2.1.2):
		// clearing FEATURES_OK would let it renegotiate under a running
		// device. Only a reset clears them.
		t.counts.inc(cStatusWritesIgnored)
		t.log.Warn("virtio-pci: guest cleared device status bits without a reset; ignored",
			"type", t.dev.Type(), "status", guestlog.Hex(old), "written", guestlog.Hex(v))
		return
	}
	if v&^old&virtio.StatusFeaturesOK != 0 {
		if !t.featuresOK() {
			t.counts.inc(cFeaturesRefused)
			v &^= virtio.StatusFeaturesOK // the driver reads it back and gives up
		}
	}
	t.status = v
	if v&^old&virtio.StatusDriverOK != 0 {
		t.start()
	}
}

// featuresOK checks the driver's feature choice; mu held.
func (t *Transport) featuresOK() bool {
	if t.drvFeatures&^t.offered != 0 {
		t.log.Warn("virtio-pci: guest accepted features not offered; FEATURES_OK refused",
			"type", t.dev.Type(), "features", guestlog.Hex(t.drvFeatures&^t.offered))
		return false
	}
	if t.drvFeatures&virtio.FVersion1 == 0 {
		t.log.Warn("virtio-pci: guest did not accept VIRTIO_F_VERSION_1; FEATURES_OK refused", "type", t.dev.Type())
		return false
	}
	return true
}

// start activates the device at DRIVER_OK; mu held.
func (t *Transport) start() {
	if t.active || t.needsReset.Load() {
		return
	}
	if t.status&virtio.StatusFeaturesOK == 0 {
		t.fail(queue.Guestf(queue.BadLayout, "DRIVER_OK without FEATURES_OK"))
		return
	}
	qs := make([]*queue.Queue, t.nq)
	for i := range t.queues {
		if !t.queues[i].enabled {
			continue
		}
		q, err := queue.New(t.mem, t.layout(i), t.queueOptions())
		if err != nil {
			t.fail(err)
			return
		}
		qs[i] = q
	}
	err := t.dev.Activate(t.ctx, virtio.Activation{
		Mem: t.mem, Features: t.drvFeatures, Queues: qs, Interrupt: t, Fail: t.fail,
		Paused: t.paused,
	})
	if err != nil {
		t.fail(err)
		return
	}
	t.active = true
	t.running = qs
}

// reset returns the function to its initial state (device_status 0); mu
// held. The device's workers stop before it returns.
func (t *Transport) reset() {
	if err := t.dev.Reset(); err != nil {
		t.log.Error("virtio-pci: device reset", "err", err)
	}
	t.active = false
	t.running = nil
	t.status = 0
	t.devFeatSel, t.drvFeatSel, t.drvFeatures = 0, 0, 0
	t.queueSel = 0
	t.needsReset.Store(false)
	t.resetQueues()
	t.irq.reset()
}

func (t *Transport) resetQueues() {
	for i := range t.queues {
		t.queues[i] = queueRegs{size: t.dev.MaxQueueSize()}
	}
}
