package virtiopci

import (
	"encoding/binary"
	"sync"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/internal/guestlog"
)

// MSIVector is one MSI route the VMM provides (a KVM GSI with an irqfd).
// The transport reprograms it whenever the guest writes its MSI-X table
// entry, the function mask or the MSI-X enable bit.
type MSIVector interface {
	// Update sets the message the vector delivers. masked is true while
	// the entry or the whole function is masked, or MSI-X is disabled: the
	// VMM may then detach the route; the transport keeps Trigger calls
	// away from a masked vector and records them as pending instead.
	Update(addr uint64, data uint32, masked bool) error
	// Trigger delivers the message once (an eventfd write for an irqfd).
	Trigger() error
	// Close releases the route.
	Close() error
}

// Interrupts is what the VMM gives the transport for interrupts: MSI-X
// vectors on demand and the function's INTx line (INTA#) for drivers that
// do not enable MSI-X.
type Interrupts interface {
	NewMSIVector() (MSIVector, error)
	INTx() devices.IRQLine
}

type msixEntry struct {
	addrLo, addrHi, data, ctrl uint32
}

type pushed struct {
	addr   uint64
	data   uint32
	masked bool
	valid  bool
}

// irqState routes the device's interrupts: through MSI-X vectors when the
// guest enabled MSI-X, otherwise through the ISR register and INTx. It has
// its own lock, never held while taking the transport's, so device workers
// can signal while the transport waits for them to stop.
type irqState struct {
	mu      sync.Mutex
	log     *guestlog.Logger
	vecs    []MSIVector
	table   []msixEntry
	last    []pushed
	pending []bool

	enabled  bool // MSI-X enable (message control)
	funcMask bool // MSI-X function mask

	intx        devices.IRQLine
	intxAllowed bool // command register INTx Disable clear
	isr         uint8
	level       bool
	setStatus   func(asserted bool) // PCI status register Interrupt Status bit

	queueVec  []uint16
	configVec uint16
}

func newIRQState(n int, ints Interrupts, nq int, setStatus func(bool), log *guestlog.Logger) (*irqState, error) {
	s := &irqState{
		log: log, table: make([]msixEntry, n), last: make([]pushed, n), pending: make([]bool, n),
		intx: ints.INTx(), intxAllowed: true, setStatus: setStatus,
		queueVec: make([]uint16, nq), configVec: NoVector,
	}
	for i := range s.queueVec {
		s.queueVec[i] = NoVector
	}
	for i := range s.table {
		s.table[i].ctrl = msixCtrlMasked // entries start masked (PCI spec)
		v, err := ints.NewMSIVector()
		if err != nil {
			s.close()
			return nil, err
		}
		s.vecs = append(s.vecs, v)
	}
	if s.intx == nil {
		s.intx = devices.NoIRQ{}
	}
	return s, nil
}

func (s *irqState) close() error {
	var first error
	for _, v := range s.vecs {
		if err := v.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.vecs = nil
	return first
}

// masked reports whether vector i may not fire now; mu held.
func (s *irqState) masked(i int) bool {
	return !s.enabled || s.funcMask || s.table[i].ctrl&msixCtrlMasked != 0
}

// push tells the VMM vector i's current message and mask, and fires it if
// it was pending and is now unmasked; mu held.
func (s *irqState) push(i int) {
	e := s.table[i]
	p := pushed{addr: uint64(e.addrHi)<<32 | uint64(e.addrLo), data: e.data, masked: s.masked(i), valid: true}
	if p != s.last[i] {
		if err := s.vecs[i].Update(p.addr, p.data, p.masked); err != nil {
			s.log.Error("virtio-pci: update MSI-X vector", "vector", i, "err", err)
		}
		s.last[i] = p
	}
	if s.pending[i] && !p.masked {
		s.pending[i] = false
		if err := s.vecs[i].Trigger(); err != nil {
			s.log.Error("virtio-pci: MSI-X trigger", "vector", i, "err", err)
		}
	}
}

func (s *irqState) pushAll() {
	for i := range s.table {
		s.push(i)
	}
}

// setControl applies the MSI-X capability's enable and function mask bits.
func (s *irqState) setControl(enabled, funcMask bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if enabled == s.enabled && funcMask == s.funcMask {
		return
	}
	s.enabled, s.funcMask = enabled, funcMask
	s.pushAll()
	s.updateLine()
}

// setINTxAllowed follows the command register's INTx Disable bit.
func (s *irqState) setINTxAllowed(ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.intxAllowed = ok
	s.updateLine()
}

// updateLine drives INTx from the ISR; mu held.
func (s *irqState) updateLine() {
	want := s.isr != 0 && !s.enabled && s.intxAllowed
	if want == s.level {
		return
	}
	s.level = want
	if err := s.intx.SetLevel(want); err != nil {
		s.log.Error("virtio-pci: INTx", "level", want, "err", err)
	}
	s.setStatus(want)
}

// fire raises vector v (MSI-X) or the ISR bit (INTx).
func (s *irqState) fire(v uint16, isrBit uint8) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.enabled {
		s.isr |= isrBit
		s.updateLine()
		return
	}
	if v == NoVector || int(v) >= len(s.table) {
		return
	}
	if s.masked(int(v)) {
		s.pending[v] = true
		return
	}
	if err := s.vecs[v].Trigger(); err != nil {
		s.log.Error("virtio-pci: MSI-X trigger", "vector", v, "err", err)
	}
}

func (s *irqState) signalQueue(q int) {
	s.mu.Lock()
	v := uint16(NoVector)
	if q >= 0 && q < len(s.queueVec) {
		v = s.queueVec[q]
	}
	s.mu.Unlock()
	s.fire(v, isrQueue)
}

func (s *irqState) signalConfig() {
	s.mu.Lock()
	v := s.configVec
	s.mu.Unlock()
	s.fire(v, isrConfig)
}

// readISR returns and clears the ISR status, lowering INTx.
func (s *irqState) readISR() uint8 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.isr
	s.isr = 0
	s.updateLine()
	return v
}

// mapVector validates a driver's vector choice: NoVector when out of range.
func (s *irqState) mapVector(v uint16) uint16 {
	if int(v) >= len(s.table) {
		return NoVector
	}
	return v
}

func (s *irqState) setQueueVector(q int, v uint16) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v = s.mapVector(v)
	s.queueVec[q] = v
	return v
}

func (s *irqState) setConfigVector(v uint16) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v = s.mapVector(v)
	s.configVec = v
	return v
}

func (s *irqState) queueVector(q int) uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queueVec[q]
}

func (s *irqState) configVector() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.configVec
}

// reset forgets the virtio-level vector choices and the ISR (device reset);
// the MSI-X table belongs to PCI and stays.
func (s *irqState) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.queueVec {
		s.queueVec[i] = NoVector
	}
	s.configVec = NoVector
	s.isr = 0
	s.updateLine()
}

// tableRead reads the MSI-X table at off (bounded by the caller).
func (s *irqState) tableRead(off uint64, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range p {
		o := off + uint64(k)
		i := o / msixEntrySize
		if i >= uint64(len(s.table)) {
			p[k] = 0
			continue
		}
		var b [msixEntrySize]byte
		e := s.table[i]
		binary.LittleEndian.PutUint32(b[msixEntryAddrLo:], e.addrLo)
		binary.LittleEndian.PutUint32(b[msixEntryAddrHi:], e.addrHi)
		binary.LittleEndian.PutUint32(b[msixEntryData:], e.data)
		binary.LittleEndian.PutUint32(b[msixEntryCtrl:], e.ctrl)
		p[k] = b[o%msixEntrySize]
	}
}

// tableWrite merges a guest write into the MSI-X table and reprograms the
// entries it touched.
func (s *irqState) tableWrite(off uint64, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	touched := -1
	for k, v := range p {
		o := off + uint64(k)
		i := o / msixEntrySize
		if i >= uint64(len(s.table)) {
			continue
		}
		var b [msixEntrySize]byte
		e := &s.table[i]
		binary.LittleEndian.PutUint32(b[msixEntryAddrLo:], e.addrLo)
		binary.LittleEndian.PutUint32(b[msixEntryAddrHi:], e.addrHi)
		binary.LittleEndian.PutUint32(b[msixEntryData:], e.data)
		binary.LittleEndian.PutUint32(b[msixEntryCtrl:], e.ctrl)
		b[o%msixEntrySize] = v
		e.addrLo = binary.LittleEndian.Uint32(b[msixEntryAddrLo:]) &^ 3 // dword aligned
		e.addrHi = binary.LittleEndian.Uint32(b[msixEntryAddrHi:])
		e.data = binary.LittleEndian.Uint32(b[msixEntryData:])
		e.ctrl = binary.LittleEndian.Uint32(b[msixEntryCtrl:]) & msixCtrlMasked
		if int(i) != touched {
			if touched >= 0 {
				s.push(touched)
			}
			touched = int(i)
		}
	}
	if touched >= 0 {
		s.push(touched)
	}
}

// pbaRead reads the pending bit array.
func (s *irqState) pbaRead(off uint64, p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range p {
		var b byte
		for bit := 0; bit < 8; bit++ {
			i := (off+uint64(k))*8 + uint64(bit)
			if i < uint64(len(s.pending)) && s.pending[i] {
				b |= 1 << bit
			}
		}
		p[k] = b
	}
}
