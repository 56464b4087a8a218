package virtionet

import (
	"encoding/binary"
	"errors"
	"fmt"
	stdnet "net"

	"github.com/corral-vmm/corral/virtio"
)

// Device state, for snapshots (SaveState/RestoreState): the guest's MAC,
// the frame handler's state (the DHCP server's lease table) when the
// handler is a virtio.Stateful, (version 2) what the driver set on the
// control queue, and (version 3) the queue pairs offered and in use. The
// backend (TAP) is not state: the VMM opens a fresh one, with as many
// queues, for the restored device. Little-endian:
//
//	version u16 | MAC [6]byte | handler state length u32 | handler state | control state (version 2) |
//	queue pairs offered u16 | queue pairs set u16 (version 3)
//
// The control state:
//
//	flags u8 | guest offloads u64 | MAC in force [6]byte | unicast entries u8 |
//	multicast entries u8 | the entries, 6 bytes each | VLAN bitmap [512]byte
//
// Version 1 (before the control queue) is still read: the control state
// then starts afresh at activation, as after a reset. Versions 1 and 2
// (before MQ) restore as one queue pair, into a device that offers one.
const (
	stVersion    = 0  // u16
	stMAC        = 2  // [6]byte
	stHandlerLen = 8  // u32
	stHeaderSize = 12 // the handler state follows

	stCtrlFlags    = 0  // u8: stCtrl* below
	stCtrlGuestOff = 1  // u64
	stCtrlMAC      = 9  // [6]byte
	stCtrlUni      = 15 // u8
	stCtrlMulti    = 16 // u8
	stCtrlEntries  = 17 // then (uni+multi) × 6 bytes, then the VLAN bitmap
	stCtrlVLANLen  = ctrlVLANs / 8

	stCtrlPromisc   = 1 << 0
	stCtrlAllMulti  = 1 << 1
	stCtrlUniOver   = 1 << 2
	stCtrlMultiOver = 1 << 3

	stPairsOffered = 0 // u16, after the control state
	stPairsSet     = 2 // u16
	stPairsLen     = 4

	// StateVersion is the format SaveState writes; RestoreState reads it
	// and versions 1 and 2.
	StateVersion = 3
)

// ErrState is matched by every error RestoreState returns.
var ErrState = errors.New("virtio-net: bad device state")

// SaveState returns the device's own state: its MAC, the frame handler's
// state when the handler is a virtio.Stateful (*dhcp.Server), and the
// control queue's settings.
func (d *Device) SaveState() ([]byte, error) {
	var hs []byte
	if s, ok := d.handler.(virtio.Stateful); ok {
		var err error
		if hs, err = s.SaveState(); err != nil {
			return nil, fmt.Errorf("virtio-net: state: frame handler: %w", err)
		}
	}
	b := make([]byte, stHeaderSize, stHeaderSize+len(hs)+stCtrlEntries+2*MACTableMax*ctrlMACEntryLen+stCtrlVLANLen+stPairsLen)
	binary.LittleEndian.PutUint16(b[stVersion:], StateVersion)
	d.mu.Lock()
	defer d.mu.Unlock()
	copy(b[stMAC:], d.mac[:])
	binary.LittleEndian.PutUint32(b[stHandlerLen:], uint32(len(hs)))
	b = append(b, hs...)
	b = d.ctrl.append(b)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(d.queues)))
	return binary.LittleEndian.AppendUint16(b, d.ctrl.pairs), nil
}

// append appends the control state's encoding to b.
func (c *ctrlState) append(b []byte) []byte {
	var flags byte
	for _, f := range []struct {
		on  bool
		bit byte
	}{{c.promisc, stCtrlPromisc}, {c.allMulti, stCtrlAllMulti}, {c.uniOver, stCtrlUniOver}, {c.multiOver, stCtrlMultiOver}} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, flags)
	b = binary.LittleEndian.AppendUint64(b, c.guestOff)
	b = append(b, c.mac[:]...)
	b = append(b, byte(len(c.uni)), byte(len(c.multi))) // at most MACTableMax each
	for _, m := range c.uni {
		b = append(b, m[:]...)
	}
	for _, m := range c.multi {
		b = append(b, m[:]...)
	}
	for _, w := range c.vlans {
		b = binary.LittleEndian.AppendUint64(b, w)
	}
	return b
}

// decodeCtrl reads the control state SaveState wrote.
func decodeCtrl(b []byte) (ctrlState, error) {
	var c ctrlState
	if len(b) < stCtrlEntries {
		return c, fmt.Errorf("control state of %d bytes, shorter than its %d-byte header", len(b), stCtrlEntries)
	}
	flags := b[stCtrlFlags]
	if flags&^(stCtrlPromisc|stCtrlAllMulti|stCtrlUniOver|stCtrlMultiOver) != 0 {
		return c, fmt.Errorf("control state flags %#x", flags)
	}
	c.promisc, c.allMulti = flags&stCtrlPromisc != 0, flags&stCtrlAllMulti != 0
	c.uniOver, c.multiOver = flags&stCtrlUniOver != 0, flags&stCtrlMultiOver != 0
	c.guestOff = binary.LittleEndian.Uint64(b[stCtrlGuestOff:])
	if c.guestOff&^ctrlGuestOffloadBits != 0 {
		return c, fmt.Errorf("guest offloads %#x are not receive offloads", c.guestOff)
	}
	c.mac = [6]byte(b[stCtrlMAC:])
	if c.mac[0]&1 != 0 || c.mac == ([6]byte{}) {
		return c, fmt.Errorf("MAC in force %v is not a unicast Ethernet address", stdnet.HardwareAddr(c.mac[:]))
	}
	nu, nm := int(b[stCtrlUni]), int(b[stCtrlMulti])
	if nu > MACTableMax || nm > MACTableMax {
		return c, fmt.Errorf("MAC tables of %d and %d entries (at most %d)", nu, nm, MACTableMax)
	}
	if want := stCtrlEntries + (nu+nm)*ctrlMACEntryLen + stCtrlVLANLen; len(b) != want {
		return c, fmt.Errorf("control state of %d bytes, want %d", len(b), want)
	}
	p := b[stCtrlEntries:]
	for i := range nu + nm {
		m := [6]byte(p[i*ctrlMACEntryLen:])
		if i < nu {
			c.uni = append(c.uni, m)
		} else {
			c.multi = append(c.multi, m)
		}
	}
	p = p[(nu+nm)*ctrlMACEntryLen:]
	for i := range c.vlans {
		c.vlans[i] = binary.LittleEndian.Uint64(p[8*i:])
	}
	return c, nil
}

// RestoreState takes the MAC (the guest's driver already uses it, whatever
// the configuration says now), the frame handler's state and the control
// queue's settings and the queue pairs in use from data, which SaveState
// wrote (this version, 2 or 1). The device must offer as many queue pairs
// as the saved one (one for versions 1 and 2). Call it on a fresh device
// before the guest runs. Errors match ErrState.
func (d *Device) RestoreState(data []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrState, fmt.Sprintf(format, args...))
	}
	le := binary.LittleEndian
	if len(data) < stHeaderSize {
		return bad("%d bytes, shorter than the %d-byte header", len(data), stHeaderSize)
	}
	v := le.Uint16(data[stVersion:])
	if v < 1 || v > StateVersion {
		return bad("version %d (this device reads 1 to %d)", v, StateVersion)
	}
	mac := [6]byte(data[stMAC:])
	if mac[0]&1 != 0 || mac == ([6]byte{}) {
		return bad("MAC %v is not a unicast Ethernet address", stdnet.HardwareAddr(mac[:]))
	}
	n := uint64(le.Uint32(data[stHandlerLen:]))
	rest := uint64(len(data) - stHeaderSize)
	if v == 1 && n != rest || n > rest {
		return bad("frame handler state of %d bytes with %d left", n, rest)
	}
	hs := data[stHeaderSize : stHeaderSize+n]
	ctrlData := data[stHeaderSize+n:]
	offered, set := 1, uint16(1)
	if v >= 3 {
		if len(ctrlData) < stPairsLen {
			return bad("%d bytes after the frame handler state, too short for the queue pairs", len(ctrlData))
		}
		pairs := ctrlData[len(ctrlData)-stPairsLen:]
		ctrlData = ctrlData[:len(ctrlData)-stPairsLen]
		offered, set = int(le.Uint16(pairs[stPairsOffered:])), le.Uint16(pairs[stPairsSet:])
		if set < 1 || int(set) > offered {
			return bad("%d queue pairs in use of %d offered", set, offered)
		}
	}
	if offered != len(d.queues) {
		return bad("saved with %d queue pairs, the device has %d (give the NIC as many backend queues)", offered, len(d.queues))
	}
	var ctrl ctrlState
	if v >= 2 {
		var err error
		if ctrl, err = decodeCtrl(ctrlData); err != nil {
			return bad("%v", err)
		}
		ctrl.pairs = set
	}
	if n > 0 {
		s, ok := d.handler.(virtio.Stateful)
		if !ok {
			return bad("frame handler state (DHCP leases) saved, but this device's frame handler keeps none")
		}
		if err := s.RestoreState(hs); err != nil {
			return fmt.Errorf("%w: frame handler: %w", ErrState, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.mac = mac
	if v >= 2 {
		d.ctrl, d.ctrlRestored = ctrl, true
	} else {
		d.ctrl = defaultCtrl(0, mac)
	}
	copy(d.config[cfgMAC:], d.ctrl.mac[:])
	return nil
}
