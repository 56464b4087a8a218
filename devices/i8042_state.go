package devices

// I8042 state encoding, version 1 (little-endian):
//
//	0   "8042"
//	4   u16 version
//	6   status bits other than OBF, AUXDATA, TIMEOUT (SYS, CMD/DAT, KEYLOCK)
//	7   controller command byte
//	8   output port
//	9   output buffer
//	10  output buffer full, 11 its byte is AUX data, 12 with timeout (0 or 1)
//	13  IRQ 1 raised (0 or 1)
//	14  controller command waiting for its parameter byte, or 0
//	15  keyboard attached (0 or 1; must match the controller's config)
//	16  keyboard command waiting for its parameter byte, or 0
//	17  bytes the keyboard holds for the controller (N, at most 16)
//	18  those N bytes, oldest first
const (
	i8042StateMagic   = "8042"
	i8042StateVersion = 1

	i8042StStatus   = 6
	i8042StCtr      = 7
	i8042StOutPort  = 8
	i8042StOut      = 9
	i8042StOutFull  = 10
	i8042StOutAux   = 11
	i8042StOutTO    = 12
	i8042StIRQ      = 13
	i8042StPending  = 14
	i8042StKbd      = 15
	i8042StKbdPend  = 16
	i8042StKbdQLen  = 17
	i8042StKbdQueue = 18

	i8042StateWhat = "devices: i8042"
)

// SaveState returns the controller's state and its keyboard's.
func (k *I8042) SaveState() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b := make([]byte, i8042StKbdQueue)
	copy(b, StateHeader(i8042StateMagic, i8042StateVersion))
	b[i8042StStatus] = k.status
	b[i8042StCtr] = k.ctr
	b[i8042StOutPort] = k.outPort
	b[i8042StOut] = k.out
	b[i8042StOutFull] = boolByte(k.outFull)
	b[i8042StOutAux] = boolByte(k.outAux)
	b[i8042StOutTO] = boolByte(k.outTO)
	b[i8042StIRQ] = boolByte(k.irqHigh)
	b[i8042StPending] = k.pending
	if k.kbd != nil {
		b[i8042StKbd] = 1
		b[i8042StKbdPend] = k.kbd.pending
		b[i8042StKbdQLen] = byte(len(k.kbd.queue))
		b = append(b, k.kbd.queue...)
	}
	return b, nil
}

// RestoreState puts the controller in a state SaveState returned, on a
// controller configured alike (with or without a keyboard), and drives
// IRQ 1 to match: low, then high again if it was raised. Call it after the
// VM's interrupt controller state is restored. Every value is checked; on
// error nothing changes.
func (k *I8042) RestoreState(data []byte) error {
	const what = i8042StateWhat
	if err := CheckStateHeader(what, data, i8042StateMagic, i8042StateVersion, i8042StKbdQueue); err != nil {
		return err
	}
	status, ctr, outPort, pending := data[i8042StStatus], data[i8042StCtr], data[i8042StOutPort], data[i8042StPending]
	if status&^(i8042StrSys|i8042StrCmdDat|i8042StrKeylock) != 0 || status&i8042StrKeylock == 0 {
		return stateErr(what, "status %#02x is not SYS, CMD/DAT and KEYLOCK (always set)", status)
	}
	if ctr&0x80 != 0 {
		return stateErr(what, "command byte %#02x has reserved bit 7 set", ctr)
	}
	if outPort&0x02 == 0 {
		return stateErr(what, "output port %#02x has A20 (bit 1) off, which this controller never does", outPort)
	}
	switch {
	case pending == 0, pending >= i8042CmdWriteCtr && pending < 0x80,
		pending == i8042CmdWriteOut, pending == i8042CmdKbdLoop, pending == i8042CmdAuxLoop, pending == i8042CmdAuxSend:
	default:
		return stateErr(what, "pending command %#02x takes no parameter byte", pending)
	}
	var flags [5]bool
	for i, f := range []struct {
		off  int
		name string
	}{{i8042StOutFull, "output buffer full flag"}, {i8042StOutAux, "AUX data flag"},
		{i8042StOutTO, "timeout flag"}, {i8042StIRQ, "IRQ flag"}, {i8042StKbd, "keyboard flag"}} {
		v, err := stateBool(what, f.name, data[f.off])
		if err != nil {
			return err
		}
		flags[i] = v
	}
	outFull, outAux, outTO, irqHigh, kbd := flags[0], flags[1], flags[2], flags[3], flags[4]
	if irqHigh && (!outFull || ctr&i8042CtrKbdInt == 0) {
		return stateErr(what, "IRQ 1 raised with the output buffer full=%v and command byte %#02x", outFull, ctr)
	}
	kbdPending, qlen := data[i8042StKbdPend], int(data[i8042StKbdQLen])
	if len(data) != i8042StKbdQueue+qlen {
		return stateErr(what, "%d bytes, want %d for %d keyboard bytes", len(data), i8042StKbdQueue+qlen, qlen)
	}
	if !kbd && (kbdPending != 0 || qlen != 0) {
		return stateErr(what, "no keyboard, yet keyboard command %#02x and %d bytes queued", kbdPending, qlen)
	}
	switch kbdPending {
	case 0, kbdCmdSetLEDs, kbdCmdScanSet, kbdCmdTypematic:
	default:
		return stateErr(what, "keyboard command %#02x takes no parameter byte", kbdPending)
	}
	if qlen > kbdBufSize {
		return stateErr(what, "keyboard holds %d bytes, more than its %d", qlen, kbdBufSize)
	}
	if qlen > 0 && !outFull {
		return stateErr(what, "keyboard holds %d bytes while the output buffer is empty", qlen)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if kbd != (k.kbd != nil) {
		return stateErr(what, "saved with keyboard=%v, this controller has keyboard=%v", kbd, k.kbd != nil)
	}
	k.status, k.ctr, k.outPort, k.out = status, ctr, outPort, data[i8042StOut]
	k.outFull, k.outAux, k.outTO, k.pending = outFull, outAux, outTO, pending
	if k.kbd != nil {
		k.kbd.pending = kbdPending
		k.kbd.queue = append(k.kbd.queue[:0], data[i8042StKbdQueue:]...)
	}
	k.irqHigh = true // so setIRQ(false) drives the line whatever it was
	k.setIRQ(false)
	k.setIRQ(irqHigh)
	return nil
}
