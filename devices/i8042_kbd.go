package devices

import "errors"

// Errors of I8042.CtrlAltDel.
var (
	// ErrNoKeyboard: the controller has no keyboard (I8042Config.Keyboard).
	ErrNoKeyboard = errors.New("devices: i8042: no keyboard attached")
	// ErrKeyboardBusy: the guest has not read what the keyboard already
	// sent; the sequence would not fit.
	ErrKeyboardBusy = errors.New("devices: i8042: keyboard buffer full")
)

// PS/2 keyboard commands and answers.
const (
	kbdCmdSetLEDs    = 0xed
	kbdCmdEcho       = 0xee
	kbdCmdScanSet    = 0xf0
	kbdCmdGetID      = 0xf2
	kbdCmdTypematic  = 0xf3
	kbdCmdEnable     = 0xf4
	kbdCmdResetDis   = 0xf5
	kbdCmdDefaults   = 0xf6
	kbdCmdResend     = 0xfe
	kbdCmdReset      = 0xff
	kbdAck           = 0xfa
	kbdResendReply   = 0xfe
	kbdSelfTestOK    = 0xaa
	kbdIDFirst       = 0xab
	kbdIDSecond      = 0x83 // an MF2 keyboard
	kbdIDSecondXlate = 0x41 // what the controller's translation makes of 0x83
	kbdScanSet2      = 0x02
	kbdBufSize       = 16
)

// The Ctrl-Alt-Del key sequence, presses then releases. With the
// controller's translation on (what firmware leaves and Linux keeps), the
// guest reads scancode set 1; without it, set 2.
var (
	ctrlAltDelSet1 = [...]byte{0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d}
	ctrlAltDelSet2 = [...]byte{0x14, 0x11, 0xe0, 0x71, 0xe0, 0xf0, 0x71, 0xf0, 0x11, 0xf0, 0x14}
)

// ps2Keyboard is an MF2 keyboard with no keys of its own: it answers the
// commands a driver sends and holds the bytes it sends until the controller
// takes them. Guarded by the I8042's mutex.
type ps2Keyboard struct {
	queue   []byte // bytes for the controller's output buffer, oldest first
	pending byte   // a command waiting for its parameter byte, or 0
}

// command handles a byte the guest sent to the keyboard.
func (kb *ps2Keyboard) command(v byte, xlate bool) {
	if p := kb.pending; p != 0 {
		kb.pending = 0
		kb.send(kbdAck)
		if p == kbdCmdScanSet && v == 0 {
			kb.send(kbdScanSet2) // "which set": always set 2
		}
		return
	}
	switch v {
	case kbdCmdSetLEDs, kbdCmdScanSet, kbdCmdTypematic:
		kb.pending = v
		kb.send(kbdAck)
	case kbdCmdEcho:
		kb.send(kbdCmdEcho)
	case kbdCmdGetID:
		id := byte(kbdIDSecond)
		if xlate {
			id = kbdIDSecondXlate
		}
		kb.send(kbdAck, kbdIDFirst, id)
	case kbdCmdEnable, kbdCmdResetDis, kbdCmdDefaults:
		kb.send(kbdAck)
	case kbdCmdReset:
		kb.queue = kb.queue[:0]
		kb.send(kbdAck, kbdSelfTestOK)
	case kbdCmdResend:
		kb.send(kbdAck)
	default:
		kb.send(kbdResendReply) // not a command this keyboard knows
	}
}

// send queues bytes for the controller; answers to commands drop what
// does not fit (the driver times out and retries).
func (kb *ps2Keyboard) send(b ...byte) {
	for _, v := range b {
		if len(kb.queue) < kbdBufSize {
			kb.queue = append(kb.queue, v)
		}
	}
}

// deliverKbd moves the keyboard's next byte into an empty output buffer,
// raising IRQ 1; mu held.
func (k *I8042) deliverKbd() {
	if k.kbd == nil || k.outFull || len(k.kbd.queue) == 0 {
		return
	}
	v := k.kbd.queue[0]
	k.kbd.queue = append(k.kbd.queue[:0], k.kbd.queue[1:]...)
	k.deviceData(v, false)
}

// CtrlAltDel types Ctrl-Alt-Del on the keyboard, as Firecracker's
// SendCtrlAltDel does: the way to ask a Linux guest to shut down that its
// kernel honours with no help from user space. Linux's keyboard driver
// (CONFIG_VT, atkbd over i8042) maps the keys to ctrl_alt_del(): by default
// the kernel restarts at once, which ends a Corral machine as a reset; an
// init that turned that off (systemd: reboot(CAD_OFF)) gets SIGINT and
// shuts down in order. The guest sees the keys only when its driver reads
// them; a guest with no keyboard driver ignores them.
func (k *I8042) CtrlAltDel() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.kbd == nil {
		return ErrNoKeyboard
	}
	seq := ctrlAltDelSet2[:]
	if k.ctr&i8042CtrXlate != 0 {
		seq = ctrlAltDelSet1[:]
	}
	if kbdBufSize-len(k.kbd.queue) < len(seq) {
		return ErrKeyboardBusy
	}
	k.kbd.send(seq...)
	k.deliverKbd()
	return nil
}
