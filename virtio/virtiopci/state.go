package virtiopci

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// Transport state, for snapshots (SaveState/RestoreState). Little-endian:
//
//	header (stHeaderSize bytes, offsets below)
//	per queue, stQueueSize bytes each (num queues of the header)
//	per MSI-X table entry, msixEntrySize bytes as the table holds them
//	the pending bit array, one bit per table entry, rounded up to bytes
//	device state length u32, then the device's own state (virtio.Stateful)
//
// The PCI configuration space is saved whole and restored by writing it
// back through the guest's path (WriteConfig): only guest-writable bits
// change, BAR moves reach OnBARChange, and MSI-X enable and the command
// register's INTx Disable are followed as a guest write would be.
const (
	stMagic        = 0  // [4]byte "CVPT"
	stVersion      = 4  // u16
	stDeviceType   = 6  // u16
	stNumQueues    = 8  // u16
	stMSIXEntries  = 10 // u16
	stOffered      = 12 // u64 features the device offered
	stDrvFeatures  = 20 // u64 features the driver accepted
	stDevFeatSel   = 28 // u32
	stDrvFeatSel   = 32 // u32
	stStatus       = 36 // u8 device_status (without DEVICE_NEEDS_RESET)
	stConfigGen    = 37 // u8
	stFlags        = 38 // u8 stFlag*
	stISR          = 39 // u8
	stQueueSel     = 40 // u16
	stConfigVector = 42 // u16
	stConfigSpace  = 44 // [pci.ConfigSize]byte
	stHeaderSize   = stConfigSpace + pci.ConfigSize

	stFlagActive     = 1 // the device was activated (it gets its queues back)
	stFlagNeedsReset = 2 // DEVICE_NEEDS_RESET
	stFlagsKnown     = stFlagActive | stFlagNeedsReset

	sqSize      = 0  // u16 queue_size
	sqEnabled   = 2  // u8 queue_enable
	sqRunning   = 3  // u8 the device holds the queue: the indices below count
	sqVector    = 4  // u16 queue_msix_vector
	sqNextAvail = 6  // u16
	sqNextUsed  = 8  // u16
	sqSignalled = 10 // u16
	sqDesc      = 12 // u64
	sqDriver    = 20 // u64
	sqDevice    = 28 // u64
	stQueueSize = 36

	// StateVersion is the format SaveState writes and RestoreState reads.
	StateVersion = 1
)

var stateMagic = [4]byte{'C', 'V', 'P', 'T'}

// Errors of Pause, SaveState and RestoreState, for callers that branch.
var (
	// ErrNotPaused is returned by SaveState before Pause.
	ErrNotPaused = errors.New("virtio-pci: the function is not paused")
	// ErrState is matched by every error RestoreState returns for saved
	// state that is corrupt or does not fit this function.
	ErrState = errors.New("virtio-pci: bad transport state")
)

// typeName names a device type in errors.
func typeName(t virtio.DeviceType) string {
	switch t {
	case virtio.TypeNet:
		return "virtio-net"
	case virtio.TypeBlock:
		return "virtio-blk"
	case virtio.TypeVsock:
		return "virtio-vsock"
	case virtio.TypeP9:
		return "virtio-9p"
	}
	return fmt.Sprintf("virtio device type %d", t)
}

// Pause stops the device's workers (virtio.Pauser) after the requests
// they took are completed: afterwards nothing touches guest memory or the
// queues for this function until Resume, and guest kicks are held for
// Resume. A device activated while paused (the guest wrote DRIVER_OK)
// starts paused. Pausing an unactivated device only marks the function
// paused; Pause is idempotent.
func (t *Transport) Pause() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("virtio-pci: pause %s: closed", typeName(t.dev.Type()))
	}
	if t.paused {
		return nil
	}
	p, ok := t.dev.(virtio.Pauser)
	if !ok && t.active {
		return fmt.Errorf("virtio-pci: pause: %s cannot be paused", typeName(t.dev.Type()))
	}
	t.paused = true
	if ok {
		if err := p.Pause(); err != nil {
			return fmt.Errorf("virtio-pci: pause %s: %w", typeName(t.dev.Type()), err)
		}
	}
	return nil
}

// Resume restarts the device's workers; they first serve what the driver
// queued meanwhile. After RestoreState it also signals every active queue
// once: a spurious virtio interrupt is harmless, a lost one hangs the
// guest. A no-op when not paused.
func (t *Transport) Resume() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || !t.paused {
		return nil
	}
	if p, ok := t.dev.(virtio.Pauser); ok {
		if err := p.Resume(); err != nil {
			return fmt.Errorf("virtio-pci: resume %s: %w", typeName(t.dev.Type()), err)
		}
	}
	t.paused = false
	if t.restored {
		t.restored = false
		if t.active {
			for q, r := range t.running {
				if r != nil {
					t.irq.signalQueue(q)
				}
			}
		}
	}
	return nil
}

// Paused reports whether the function is paused.
func (t *Transport) Paused() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.paused
}

// SaveState returns the function's state: configuration space, common
// configuration, ISR, MSI-X table and PBA, each queue's registers and
// ring indices, and the device's own state when it is a virtio.Stateful.
// The function must be paused (ErrNotPaused), and every chain the device
// took must be back in the used ring.
func (t *Transport) SaveState() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	name := typeName(t.dev.Type())
	if !t.paused {
		return nil, fmt.Errorf("virtio-pci: state of %s: %w", name, ErrNotPaused)
	}
	le := binary.LittleEndian
	n := len(t.irq.table)
	b := make([]byte, stHeaderSize+t.nq*stQueueSize+n*msixEntrySize+(n+7)/8+4)
	copy(b[stMagic:], stateMagic[:])
	le.PutUint16(b[stVersion:], StateVersion)
	le.PutUint16(b[stDeviceType:], uint16(t.dev.Type()))
	le.PutUint16(b[stNumQueues:], uint16(t.nq))
	le.PutUint16(b[stMSIXEntries:], uint16(n))
	le.PutUint64(b[stOffered:], t.offered)
	le.PutUint64(b[stDrvFeatures:], t.drvFeatures)
	le.PutUint32(b[stDevFeatSel:], t.devFeatSel)
	le.PutUint32(b[stDrvFeatSel:], t.drvFeatSel)
	b[stStatus] = t.status
	b[stConfigGen] = t.configGen
	if t.active {
		b[stFlags] |= stFlagActive
	}
	if t.needsReset.Load() {
		b[stFlags] |= stFlagNeedsReset
	}
	le.PutUint16(b[stQueueSel:], t.queueSel)
	t.cs.ReadConfig(0, b[stConfigSpace:stConfigSpace+pci.ConfigSize])

	t.irq.mu.Lock()
	b[stISR] = t.irq.isr
	le.PutUint16(b[stConfigVector:], t.irq.configVec)
	off := stHeaderSize
	for q, r := range t.queues {
		e := b[off : off+stQueueSize]
		le.PutUint16(e[sqSize:], r.size)
		if r.enabled {
			e[sqEnabled] = 1
		}
		le.PutUint16(e[sqVector:], t.irq.queueVec[q])
		le.PutUint64(e[sqDesc:], r.desc)
		le.PutUint64(e[sqDriver:], r.driver)
		le.PutUint64(e[sqDevice:], r.device)
		if t.active && t.running[q] != nil {
			s := t.running[q].State()
			if s.NextAvail != s.NextUsed {
				t.irq.mu.Unlock()
				return nil, fmt.Errorf("virtio-pci: state of %s: queue %d has %d chains in flight (next avail %d, next used %d) after Pause",
					name, q, s.NextAvail-s.NextUsed, s.NextAvail, s.NextUsed)
			}
			e[sqRunning] = 1
			le.PutUint16(e[sqNextAvail:], s.NextAvail)
			le.PutUint16(e[sqNextUsed:], s.NextUsed)
			le.PutUint16(e[sqSignalled:], s.Signalled)
		}
		off += stQueueSize
	}
	for _, x := range t.irq.table {
		e := b[off : off+msixEntrySize]
		le.PutUint32(e[msixEntryAddrLo:], x.addrLo)
		le.PutUint32(e[msixEntryAddrHi:], x.addrHi)
		le.PutUint32(e[msixEntryData:], x.data)
		le.PutUint32(e[msixEntryCtrl:], x.ctrl)
		off += msixEntrySize
	}
	for i, p := range t.irq.pending {
		if p {
			b[off+i/8] |= 1 << (i % 8)
		}
	}
	off += (n + 7) / 8
	t.irq.mu.Unlock()

	if s, ok := t.dev.(virtio.Stateful); ok {
		ds, err := s.SaveState()
		if err != nil {
			return nil, fmt.Errorf("virtio-pci: state of %s: %w", name, err)
		}
		le.PutUint32(b[off:], uint32(len(ds)))
		b = append(b, ds...)
	}
	return b, nil
}

// savedQueue is one queue's part of the state, decoded.
type savedQueue struct {
	regs    queueRegs
	vector  uint16
	running bool
	state   queue.State
}

// savedState is the state decoded and checked, before anything changes.
type savedState struct {
	drvFeatures, offered   uint64
	devFeatSel, drvFeatSel uint32
	status, configGen, isr uint8
	flags                  uint8
	queueSel, configVector uint16
	config                 []byte
	queues                 []savedQueue
	table                  []msixEntry
	pending                []bool
	device                 []byte
}

// decodeState parses data and checks it against this function: the same
// device type, queue count and vector count, features within what the
// device offers, vectors within the table, enabled queues of a size the
// device takes. It changes nothing.
func (t *Transport) decodeState(data []byte) (*savedState, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrState, fmt.Sprintf(format, args...))
	}
	le := binary.LittleEndian
	if len(data) < stHeaderSize {
		return nil, bad("%d bytes, shorter than the %d-byte header", len(data), stHeaderSize)
	}
	if [4]byte(data[stMagic:]) != stateMagic {
		return nil, bad("magic %q is not %q", data[stMagic:stMagic+4], stateMagic[:])
	}
	if v := le.Uint16(data[stVersion:]); v != StateVersion {
		return nil, bad("version %d (this transport reads %d)", v, StateVersion)
	}
	if typ := virtio.DeviceType(le.Uint16(data[stDeviceType:])); typ != t.dev.Type() {
		return nil, bad("saved for %s, restored into %s", typeName(typ), typeName(t.dev.Type()))
	}
	if nq := int(le.Uint16(data[stNumQueues:])); nq != t.nq {
		return nil, bad("%d queues saved, the device has %d", nq, t.nq)
	}
	n := len(t.irq.table)
	if m := int(le.Uint16(data[stMSIXEntries:])); m != n {
		return nil, bad("%d MSI-X entries saved, the function has %d", m, n)
	}
	s := &savedState{
		offered:      le.Uint64(data[stOffered:]),
		drvFeatures:  le.Uint64(data[stDrvFeatures:]),
		devFeatSel:   le.Uint32(data[stDevFeatSel:]),
		drvFeatSel:   le.Uint32(data[stDrvFeatSel:]),
		status:       data[stStatus],
		configGen:    data[stConfigGen],
		flags:        data[stFlags],
		isr:          data[stISR],
		queueSel:     le.Uint16(data[stQueueSel:]),
		configVector: le.Uint16(data[stConfigVector:]),
		config:       data[stConfigSpace : stConfigSpace+pci.ConfigSize],
	}
	if extra := s.drvFeatures &^ t.offered; extra != 0 {
		return nil, bad("driver features %#x not offered by this device (it offers %#x)", extra, t.offered)
	}
	if s.flags&^stFlagsKnown != 0 {
		return nil, bad("flags %#x", s.flags)
	}
	if s.status&virtio.StatusDeviceNeedsReset != 0 {
		return nil, bad("device status %#x with DEVICE_NEEDS_RESET (kept in flags)", s.status)
	}
	if s.status&virtio.StatusFeaturesOK != 0 && s.drvFeatures&virtio.FVersion1 == 0 {
		return nil, bad("FEATURES_OK without VIRTIO_F_VERSION_1 accepted")
	}
	active := s.flags&stFlagActive != 0
	if active && s.status&(virtio.StatusDriverOK|virtio.StatusFeaturesOK) != virtio.StatusDriverOK|virtio.StatusFeaturesOK {
		return nil, bad("device active with status %#x (want DRIVER_OK and FEATURES_OK)", s.status)
	}
	if s.isr&^(isrQueue|isrConfig) != 0 {
		return nil, bad("ISR %#x", s.isr)
	}
	if s.configVector != NoVector && int(s.configVector) >= n {
		return nil, bad("configuration vector %d of %d", s.configVector, n)
	}
	// The identity registers must be this function's: a state saved for
	// another device model is refused here, not after half a restore.
	var cur [pci.ConfigSize]byte
	t.cs.ReadConfig(0, cur[:])
	for _, r := range []struct {
		name     string
		off, len int
	}{
		{"vendor and device ID", pci.VendorIDOffset, 4},
		{"class code", pci.ClassCodeOffset, 3},
		{"subsystem IDs", pci.SubsystemVendorOff, 4},
	} {
		if got, want := s.config[r.off:r.off+r.len], cur[r.off:r.off+r.len]; string(got) != string(want) {
			return nil, bad("configuration space %s % x; this function has % x", r.name, got, want)
		}
	}

	off := stHeaderSize
	need := off + t.nq*stQueueSize + n*msixEntrySize + (n+7)/8 + 4
	if len(data) < need {
		return nil, bad("%d bytes; %d queues and %d MSI-X entries need %d", len(data), t.nq, n, need)
	}
	max := t.dev.MaxQueueSize()
	for q := 0; q < t.nq; q++ {
		e := data[off : off+stQueueSize]
		off += stQueueSize
		sq := savedQueue{
			regs: queueRegs{
				size: le.Uint16(e[sqSize:]), enabled: e[sqEnabled] != 0,
				desc: le.Uint64(e[sqDesc:]), driver: le.Uint64(e[sqDriver:]), device: le.Uint64(e[sqDevice:]),
			},
			vector:  le.Uint16(e[sqVector:]),
			running: e[sqRunning] != 0,
		}
		if e[sqEnabled] > 1 || e[sqRunning] > 1 {
			return nil, bad("queue %d enable %d, running %d", q, e[sqEnabled], e[sqRunning])
		}
		if sq.vector != NoVector && int(sq.vector) >= n {
			return nil, bad("queue %d vector %d of %d", q, sq.vector, n)
		}
		if sq.regs.enabled {
			if sz := sq.regs.size; sz == 0 || sz&(sz-1) != 0 || sz > max {
				return nil, bad("queue %d size %d is not a power of two in 1..%d", q, sz, max)
			}
		}
		if sq.running != (active && sq.regs.enabled) {
			return nil, bad("queue %d running %v, enabled %v, device active %v", q, sq.running, sq.regs.enabled, active)
		}
		if sq.running {
			sq.state = queue.State{
				Layout:    queue.Layout{Size: sq.regs.size, Desc: sq.regs.desc, Avail: sq.regs.driver, Used: sq.regs.device},
				NextAvail: le.Uint16(e[sqNextAvail:]), NextUsed: le.Uint16(e[sqNextUsed:]), Signalled: le.Uint16(e[sqSignalled:]),
			}
			if sq.state.NextAvail != sq.state.NextUsed {
				return nil, bad("queue %d next avail %d differs from next used %d (chains in flight)", q, sq.state.NextAvail, sq.state.NextUsed)
			}
		}
		s.queues = append(s.queues, sq)
	}
	for i := 0; i < n; i++ {
		e := data[off : off+msixEntrySize]
		off += msixEntrySize
		x := msixEntry{
			addrLo: le.Uint32(e[msixEntryAddrLo:]), addrHi: le.Uint32(e[msixEntryAddrHi:]),
			data: le.Uint32(e[msixEntryData:]), ctrl: le.Uint32(e[msixEntryCtrl:]),
		}
		if x.addrLo&3 != 0 || x.ctrl&^msixCtrlMasked != 0 {
			return nil, bad("MSI-X entry %d address %#x control %#x", i, x.addrLo, x.ctrl)
		}
		s.table = append(s.table, x)
	}
	for i := 0; i < n; i++ {
		s.pending = append(s.pending, data[off+i/8]&(1<<(i%8)) != 0)
	}
	if pad := data[off+n/8] >> (n % 8); n%8 != 0 && pad != 0 {
		return nil, bad("pending bits past MSI-X entry %d", n-1)
	}
	off += (n + 7) / 8
	dl := le.Uint32(data[off:])
	off += 4
	if uint64(dl) != uint64(len(data)-off) {
		return nil, bad("device state of %d bytes with %d left", dl, len(data)-off)
	}
	s.device = data[off:]
	if _, ok := t.dev.(virtio.Stateful); !ok && len(s.device) > 0 {
		return nil, bad("%d bytes of device state, but %s keeps none", len(s.device), typeName(t.dev.Type()))
	}
	return s, nil
}

// RestoreState puts a fresh function (built from the same Config, device
// status 0, before the guest runs) in the state SaveState saved. The MSI-X
// table, configuration space and vectors go through the paths guest
// writes take, so MSI routes, BAR mappings and ioeventfds follow. A device
// that was active is activated at its queues' saved ring indices, paused:
// Resume starts it and signals each active queue once. Errors wrap
// ErrState for corrupt or mismatched state (then nothing changed) or come
// from the device; either way do not run the guest on this function.
func (t *Transport) RestoreState(data []byte) error {
	s, err := t.decodeState(data)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.active || t.status != 0 {
		return fmt.Errorf("virtio-pci: restore %s: the function is not fresh (status %#x)", typeName(t.dev.Type()), t.status)
	}
	// Queues are checked against guest memory before anything changes.
	opts := virtio.QueueOptions(s.drvFeatures, t.dev.MaxQueueSize())
	var qs []*queue.Queue
	active := s.flags&stFlagActive != 0 && s.flags&stFlagNeedsReset == 0
	if active {
		qs = make([]*queue.Queue, t.nq)
		for i, sq := range s.queues {
			if !sq.running {
				continue
			}
			q, err := queue.Restore(t.mem, sq.state.Layout, opts, sq.state)
			if err != nil {
				return fmt.Errorf("%w: queue %d: %w", ErrState, i, err)
			}
			qs[i] = q
		}
	}

	// MSI-X table first, so that enabling MSI-X below programs the
	// restored messages.
	for i, x := range s.table {
		var e [msixEntrySize]byte
		binary.LittleEndian.PutUint32(e[msixEntryAddrLo:], x.addrLo)
		binary.LittleEndian.PutUint32(e[msixEntryAddrHi:], x.addrHi)
		binary.LittleEndian.PutUint32(e[msixEntryData:], x.data)
		binary.LittleEndian.PutUint32(e[msixEntryCtrl:], x.ctrl)
		t.irq.tableWrite(uint64(i)*msixEntrySize, e[:])
	}
	t.WriteConfig(0, s.config)
	t.irq.mu.Lock()
	copy(t.irq.pending, s.pending)
	t.irq.pushAll()
	t.irq.mu.Unlock()
	t.irq.setConfigVector(s.configVector)
	for q, sq := range s.queues {
		t.queues[q] = sq.regs
		t.irq.setQueueVector(q, sq.vector)
	}
	t.irq.mu.Lock()
	t.irq.isr = s.isr
	t.irq.updateLine()
	t.irq.mu.Unlock()

	t.devFeatSel, t.drvFeatSel, t.drvFeatures = s.devFeatSel, s.drvFeatSel, s.drvFeatures
	t.status, t.configGen, t.queueSel = s.status, s.configGen, s.queueSel
	t.needsReset.Store(s.flags&stFlagNeedsReset != 0)
	t.paused, t.restored = true, true
	if active {
		err := t.dev.Activate(t.ctx, virtio.Activation{
			Mem: t.mem, Features: t.drvFeatures, Queues: qs, Interrupt: t, Fail: t.fail, Paused: true,
		})
		if err != nil {
			return fmt.Errorf("virtio-pci: restore %s: activate: %w", typeName(t.dev.Type()), err)
		}
		t.active, t.running = true, qs
	}
	if st, ok := t.dev.(virtio.Stateful); ok && len(s.device) > 0 {
		if err := st.RestoreState(s.device); err != nil {
			return fmt.Errorf("virtio-pci: restore %s: %w", typeName(t.dev.Type()), err)
		}
	}
	return nil
}
