package devices

import "encoding/binary"

// Serial state encoding, version 1 (little-endian):
//
//	0   "UART"
//	4   u16 version
//	6   IER, LCR, MCR, SCR, DLL, DLM, FCR (one byte each)
//	13  LSR error bits latched until LSR is read
//	14  MSR delta bits latched until MSR is read
//	15  THRE interrupt pending (0 or 1)
//	16  u16 bytes in the receive FIFO (R)
//	18  u32 bytes of host input held beyond the FIFO (H)
//	22  the R FIFO bytes, oldest first, then the H held bytes
const (
	serialStateMagic   = "UART"
	serialStateVersion = 1

	serialStIER      = 6
	serialStLCR      = 7
	serialStMCR      = 8
	serialStSCR      = 9
	serialStDLL      = 10
	serialStDLM      = 11
	serialStFCR      = 12
	serialStLSRErr   = 13
	serialStMSRDelta = 14
	serialStTHRIntr  = 15
	serialStRXLen    = 16
	serialStHeldLen  = 18
	serialStData     = 22

	serialStateWhat = "devices: serial"
)

// SaveState returns the UART's guest-visible state: its registers, the
// receive FIFO, host input held for the guest, and pending interrupts.
// Output the guest already transmitted is not part of it: the guest saw
// it leave (THRE), and it belongs to this Serial's writer, which Run or
// Flush still feeds. If that output had filled the buffer (THRE clear), the
// state says THRE is back with its interrupt, as Flush would make it.
// Save a paused machine, so no vCPU changes the registers meanwhile.
func (s *Serial) SaveState() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := make([]byte, serialStData, serialStData+s.rxLen+s.rxqLen)
	copy(b, StateHeader(serialStateMagic, serialStateVersion))
	b[serialStIER] = s.ier
	b[serialStLCR] = s.lcr
	b[serialStMCR] = s.mcr
	b[serialStSCR] = s.scr
	b[serialStDLL] = s.dll
	b[serialStDLM] = s.dlm
	b[serialStFCR] = s.fcr
	b[serialStLSRErr] = s.lsrErr
	b[serialStMSRDelta] = s.msrDelta
	b[serialStTHRIntr] = boolByte(s.thrIntr || !s.thrEmpty() && s.ier&ierTHRI != 0)
	binary.LittleEndian.PutUint16(b[serialStRXLen:], uint16(s.rxLen))
	binary.LittleEndian.PutUint32(b[serialStHeldLen:], uint32(s.rxqLen))
	for i := range s.rxLen {
		b = append(b, s.rx[(s.rxHd+i)%uartFIFOSize])
	}
	for i := range s.rxqLen {
		b = append(b, s.rxq[(s.rxqHd+i)%s.rxqCap])
	}
	return b, nil
}

// RestoreState puts the UART in a state SaveState returned, replacing its
// registers and receive side (statistics and output not yet written stay
// as they are), and drives the IRQ line to match: low, then high if an
// enabled interrupt is pending, so an edge-triggered pin sees it. Call it
// before the guest runs and after the VM's interrupt controller state is
// restored. Every value is checked; on error nothing changes.
func (s *Serial) RestoreState(data []byte) error {
	const what = serialStateWhat
	if err := CheckStateHeader(what, data, serialStateMagic, serialStateVersion, serialStData); err != nil {
		return err
	}
	ier, mcr, fcr := data[serialStIER], data[serialStMCR], data[serialStFCR]
	lsrErr, msrDelta := data[serialStLSRErr], data[serialStMSRDelta]
	if ier&^ierMask != 0 {
		return stateErr(what, "IER %#02x has reserved bits set", ier)
	}
	if mcr&^mcrMask != 0 {
		return stateErr(what, "MCR %#02x has reserved bits set", mcr)
	}
	if fcr&^(fcrEnable|fcrTrigMask) != 0 || fcr != 0 && fcr&fcrEnable == 0 {
		return stateErr(what, "FCR %#02x is not FIFOs off (0) or on with a trigger level", fcr)
	}
	if lsrErr&^lsrErrors != 0 {
		return stateErr(what, "LSR error bits %#02x are not only OE, PE, FE, BI", lsrErr)
	}
	if msrDelta&^(msrDCTS|msrDDSR|msrTERI|msrDDCD) != 0 {
		return stateErr(what, "MSR delta bits %#02x are not only DCTS, DDSR, TERI, DDCD", msrDelta)
	}
	thrIntr, err := stateBool(what, "THRE interrupt flag", data[serialStTHRIntr])
	if err != nil {
		return err
	}
	if thrIntr && ier&ierTHRI == 0 {
		return stateErr(what, "THRE interrupt pending with IER %#02x not enabling it", ier)
	}
	rxCap := 1
	if fcr&fcrEnable != 0 {
		rxCap = uartFIFOSize
	}
	rxLen := int(binary.LittleEndian.Uint16(data[serialStRXLen:]))
	if rxLen > rxCap {
		return stateErr(what, "receive FIFO holds %d bytes, more than its %d", rxLen, rxCap)
	}
	held := uint64(binary.LittleEndian.Uint32(data[serialStHeldLen:]))
	if want := uint64(serialStData) + uint64(rxLen) + held; uint64(len(data)) != want {
		return stateErr(what, "%d bytes, want %d for %d FIFO and %d held bytes", len(data), want, rxLen, held)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if held > uint64(s.rxqCap) {
		return stateErr(what, "%d bytes of held input, more than this port's input buffer of %d", held, s.rxqCap)
	}
	if held > 0 && mcr&mcrLoop == 0 && rxLen < rxCap {
		return stateErr(what, "%d bytes of input held while the receive FIFO has room (%d of %d)", held, rxLen, rxCap)
	}

	s.ier, s.lcr, s.mcr, s.scr = ier, data[serialStLCR], mcr, data[serialStSCR]
	s.dll, s.dlm, s.fcr = data[serialStDLL], data[serialStDLM], fcr
	s.lsrErr, s.msrDelta, s.thrIntr = lsrErr, msrDelta, thrIntr
	s.msrLines = s.msrStatus() // follows MCR, with no new delta
	p := data[serialStData:]
	s.rxHd, s.rxLen = 0, 0
	for _, v := range p[:rxLen] {
		s.pushRX(v)
	}
	s.rxqHd, s.rxqLen = 0, 0
	if held > 0 && s.rxq == nil {
		s.rxq = make([]byte, s.rxqCap)
	}
	s.rxqLen = copy(s.rxq, p[rxLen:])
	s.wakeRX()

	s.setLine(false)
	s.prevSrc = 0
	s.updateIRQ()
	return nil
}
