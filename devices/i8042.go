package devices

import (
	"fmt"
	"sync"
)

// I/O ports of the i8042 keyboard controller. Insert it with I8042.Insert.
const (
	I8042DataPort    = 0x60
	I8042CommandPort = 0x64
)

// i8042 status register bits.
const (
	i8042StrOBF     = 0x01 // output buffer full
	i8042StrSys     = 0x04 // system flag (CTR bit 2)
	i8042StrCmdDat  = 0x08 // last write was a command (port 0x64)
	i8042StrKeylock = 0x10 // 1: keyboard not inhibited by the key lock
	i8042StrAuxData = 0x20 // output buffer holds auxiliary-port data
	i8042StrTimeout = 0x40 // the device addressed did not answer
)

// i8042 controller command byte (CTR) bits.
const (
	i8042CtrKbdInt = 0x01
	i8042CtrSys    = 0x04
	i8042CtrKbdDis = 0x10
	i8042CtrAuxDis = 0x20
	i8042CtrXlate  = 0x40
	// i8042InitialCtr is what a BIOS leaves: keyboard interrupt on, system
	// flag, auxiliary port disabled (there is none), scancode translation.
	i8042InitialCtr = i8042CtrKbdInt | i8042CtrSys | i8042CtrAuxDis | i8042CtrXlate
)

// i8042 controller commands (written to port 0x64).
const (
	i8042CmdReadCtr    = 0x20
	i8042CmdWriteCtr   = 0x60
	i8042CmdAuxDisable = 0xa7
	i8042CmdAuxEnable  = 0xa8
	i8042CmdAuxTest    = 0xa9
	i8042CmdSelfTest   = 0xaa
	i8042CmdKbdTest    = 0xab
	i8042CmdKbdDisable = 0xad
	i8042CmdKbdEnable  = 0xae
	i8042CmdReadInput  = 0xc0
	i8042CmdReadOutput = 0xd0
	i8042CmdWriteOut   = 0xd1
	i8042CmdKbdLoop    = 0xd2
	i8042CmdAuxLoop    = 0xd3
	i8042CmdAuxSend    = 0xd4
	i8042CmdReadTest   = 0xe0
	i8042CmdPulseLow   = 0xf0 // 0xf0–0xff pulse output-port bits; bit 0 is CPU reset
)

// I8042Config configures an I8042.
type I8042Config struct {
	// Exit is called with ExitReset when the guest resets the machine
	// through the controller (command 0xFE, or an output-port write with
	// the reset bit low). nil ignores resets.
	Exit ExitFunc
	// KbdIRQ is IRQ 1, pulsed when keyboard-port data (a "no device"
	// answer) is ready and the guest enabled the keyboard interrupt. nil:
	// none; the guest then finds out by polling or a timeout.
	KbdIRQ IRQLine
	// Keyboard attaches a PS/2 keyboard to the keyboard port: it answers
	// the commands Linux's atkbd driver sends (so the driver binds), and
	// CtrlAltDel can type into it. Without it nothing is plugged in.
	Keyboard bool
}

// I8042 is a PS/2 keyboard controller with nothing plugged in: enough for
// Linux's i8042 driver to probe it and find no devices, and for the
// "keyboard controller reset" (0xFE to port 0x64) that Linux and other
// guests use to reboot.
//
// Emulated: the status register (the input buffer is never busy: every
// write is handled at once), a one-byte output buffer (a new reply replaces
// an unread one), the command byte (0x20/0x60), the controller self-test
// (0xAA → 0x55), the keyboard interface test (0xAB → 0x00), port
// enable/disable (0xA7, 0xA8, 0xAD, 0xAE, reflected in the command byte),
// the input port, test inputs and output port (0xC0, 0xE0, 0xD0/0xD1 — an
// output-port write with bit 0 clear resets the machine), keyboard-port
// loopback (0xD2) and the output-port pulse commands (0xF0–0xFF; bit 0
// clear resets, so 0xFE resets).
//
// The auxiliary (mouse) port does not exist: its interface test (0xA9)
// answers 0x01 (clock line stuck), and auxiliary loopback (0xD3) answers
// without the auxiliary-data status bit, so Linux decides at once that
// there is no AUX port, without waiting for timeouts. Bytes sent to the
// keyboard (port 0x60 writes outside a command) or to the mouse (0xD4)
// answer 0xFE with the timeout bit set: no device is attached. Scancodes,
// A20 gating (A20 is always on) and the controller's RAM (0x21–0x3F,
// 0x61–0x7F) are not emulated: those reads answer 0, writes are ignored.
type I8042 struct {
	mu      sync.Mutex
	status  byte // bits other than OBF/AUXDATA/TIMEOUT, which come from the buffer
	ctr     byte
	outPort byte
	out     byte // output buffer
	outFull bool
	outAux  bool
	outTO   bool
	pending byte // command waiting for its parameter byte on port 0x60, or 0
	irqHigh bool
	exit    ExitFunc
	irq     IRQLine
	kbd     *ps2Keyboard // nil: no keyboard attached
}

// NewI8042 returns a controller in the state a BIOS leaves it.
func NewI8042(cfg I8042Config) *I8042 {
	k := &I8042{
		status:  i8042StrSys | i8042StrKeylock,
		ctr:     i8042InitialCtr,
		outPort: 0x03, // reset line high (not resetting), A20 on
		exit:    cfg.Exit,
		irq:     cfg.KbdIRQ,
	}
	if k.irq == nil {
		k.irq = NoIRQ{}
	}
	if cfg.Keyboard {
		k.kbd = &ps2Keyboard{}
	}
	return k
}

// Insert puts the controller's two ports, 0x60 and 0x64, on b.
func (k *I8042) Insert(b *Bus) error {
	if err := b.Insert(I8042DataPort, 1, "i8042 data", i8042Port{k, false}); err != nil {
		return fmt.Errorf("devices: i8042: %w", err)
	}
	if err := b.Insert(I8042CommandPort, 1, "i8042 command", i8042Port{k, true}); err != nil {
		_ = b.Remove(I8042DataPort)
		return fmt.Errorf("devices: i8042: %w", err)
	}
	return nil
}

// DataPort returns the Device for port 0x60, for a VMM that places the
// ports itself.
func (k *I8042) DataPort() Device { return i8042Port{k, false} }

// CommandPort returns the Device for port 0x64 (status on read, commands on write).
func (k *I8042) CommandPort() Device { return i8042Port{k, true} }

// i8042Port is one of the controller's two one-byte ports. Wider accesses
// touch only the first byte; the rest read 0xff.
type i8042Port struct {
	k   *I8042
	cmd bool
}

func (p i8042Port) Read(_ uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	fill(data, 0xff)
	if p.cmd {
		data[0] = p.k.readStatus()
	} else {
		data[0] = p.k.readData()
	}
}

func (p i8042Port) Write(_ uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	if p.cmd {
		p.k.writeCommand(data[0])
	} else {
		p.k.writeData(data[0])
	}
}

func (k *I8042) readStatus() byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.status
	if k.outFull {
		v |= i8042StrOBF
		if k.outAux {
			v |= i8042StrAuxData
		}
		if k.outTO {
			v |= i8042StrTimeout
		}
	}
	return v
}

func (k *I8042) readData() byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	v := k.out // an empty buffer reads its last byte again
	k.outFull = false
	k.setIRQ(false)
	k.deliverKbd()
	return v
}

// reply puts a controller reply in the output buffer; mu held.
func (k *I8042) reply(v byte) {
	k.out, k.outFull, k.outAux, k.outTO = v, true, false, false
	k.setIRQ(false)
}

// deviceData puts a byte "from the keyboard" in the output buffer and
// raises IRQ 1 if the guest enabled it; mu held.
func (k *I8042) deviceData(v byte, timeout bool) {
	k.out, k.outFull, k.outAux, k.outTO = v, true, false, timeout
	if k.ctr&i8042CtrKbdInt != 0 {
		k.setIRQ(false) // a fresh edge for an edge-triggered pin
		k.setIRQ(true)
	}
}

func (k *I8042) setIRQ(high bool) {
	if high == k.irqHigh {
		return
	}
	k.irqHigh = high
	_ = k.irq.SetLevel(high) // nothing useful to do on failure: the guest polls or times out
}

func (k *I8042) writeCommand(c byte) {
	k.mu.Lock()
	reset := false
	k.status |= i8042StrCmdDat
	k.pending = 0
	switch {
	case c == i8042CmdReadCtr:
		k.reply(k.ctr)
	case c > i8042CmdReadCtr && c < 0x40:
		k.reply(0) // controller RAM: not kept
	case c >= i8042CmdWriteCtr && c < 0x80:
		k.pending = c
	case c == i8042CmdAuxDisable:
		k.ctr |= i8042CtrAuxDis
	case c == i8042CmdAuxEnable:
		k.ctr &^= i8042CtrAuxDis
	case c == i8042CmdAuxTest:
		k.reply(0x01) // clock line stuck low: no auxiliary port
	case c == i8042CmdSelfTest:
		k.status |= i8042StrSys
		k.reply(0x55)
	case c == i8042CmdKbdTest:
		k.reply(0x00)
	case c == i8042CmdKbdDisable:
		k.ctr |= i8042CtrKbdDis
	case c == i8042CmdKbdEnable:
		k.ctr &^= i8042CtrKbdDis
	case c == i8042CmdReadInput:
		k.reply(0x80) // keyboard not inhibited
	case c == i8042CmdReadOutput:
		k.reply(k.outPort)
	case c == i8042CmdWriteOut || c == i8042CmdKbdLoop || c == i8042CmdAuxLoop || c == i8042CmdAuxSend:
		k.pending = c
	case c == i8042CmdReadTest:
		k.reply(0x00)
	case c >= i8042CmdPulseLow:
		reset = c&0x01 == 0
	}
	k.mu.Unlock()
	if reset {
		k.doReset()
	}
}

func (k *I8042) writeData(v byte) {
	k.mu.Lock()
	reset := false
	k.status &^= i8042StrCmdDat
	cmd := k.pending
	k.pending = 0
	switch {
	case cmd == i8042CmdWriteCtr:
		k.ctr = v &^ 0x80 // bit 7 is reserved
		if v&i8042CtrSys != 0 {
			k.status |= i8042StrSys
		} else {
			k.status &^= i8042StrSys
		}
		if k.ctr&i8042CtrKbdInt == 0 {
			k.setIRQ(false)
		}
	case cmd > i8042CmdWriteCtr && cmd < 0x80:
		// controller RAM: ignored
	case cmd == i8042CmdWriteOut:
		k.outPort = v | 0x02 // A20 stays on
		reset = v&0x01 == 0
	case cmd == i8042CmdKbdLoop:
		k.deviceData(v, false)
	case cmd == i8042CmdAuxLoop:
		// No auxiliary port: the byte comes back, but not as AUX data.
		k.reply(v)
	case cmd == i8042CmdAuxSend:
		k.reply(0xfe)
		k.outAux, k.outTO = true, true
	case k.kbd != nil:
		k.kbd.command(v, k.ctr&i8042CtrXlate != 0)
		k.deliverKbd()
	default:
		// A byte for the keyboard: nobody is there.
		k.deviceData(0xfe, true)
	}
	k.mu.Unlock()
	if reset {
		k.doReset()
	}
}

func (k *I8042) doReset() {
	if k.exit != nil {
		k.exit(Exit{Kind: ExitReset})
	}
}
