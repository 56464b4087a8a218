package devices

import (
	"bytes"
	"errors"
	"testing"
)

// kbdSend is Linux's ps2_command through the i8042: a byte to the keyboard
// (port 0x60 with no controller command pending), then its answers.
func (c kbc) kbdSend(v byte, nreply int) ([]byte, error) {
	c.out(I8042DataPort, v)
	var r []byte
	for i := 0; i < nreply; i++ {
		n := 0
		for c.in(I8042CommandPort)&i8042StrOBF == 0 {
			if n++; n > 100 {
				return r, errTimeout
			}
		}
		if c.in(I8042CommandPort)&i8042StrTimeout != 0 {
			return r, errors.New("timeout bit: no keyboard")
		}
		r = append(r, c.in(I8042DataPort))
	}
	return r, nil
}

// TestI8042KeyboardAtkbdProbe follows atkbd_probe and atkbd_activate of
// Linux: GETID, RESET_DIS, SETLEDS, the typematic rate and ENABLE.
func TestI8042KeyboardAtkbdProbe(t *testing.T) {
	var irqs int
	c, _ := newKBC(t, I8042Config{Keyboard: true, KbdIRQ: IRQFunc(func(high bool) error {
		if high {
			irqs++
		}
		return nil
	})})
	steps := []struct {
		send  byte
		nrep  int
		reply []byte
	}{
		{kbdCmdGetID, 3, []byte{0xfa, 0xab, 0x41}}, // translated: 0x83 reads 0x41
		{kbdCmdResetDis, 1, []byte{0xfa}},
		{kbdCmdSetLEDs, 1, []byte{0xfa}},
		{0x00, 1, []byte{0xfa}},
		{kbdCmdTypematic, 1, []byte{0xfa}},
		{0x20, 1, []byte{0xfa}},
		{kbdCmdEnable, 1, []byte{0xfa}},
		{kbdCmdScanSet, 1, []byte{0xfa}},
		{0x00, 2, []byte{0xfa, 0x02}},
		{kbdCmdEcho, 1, []byte{0xee}},
		{kbdCmdReset, 2, []byte{0xfa, 0xaa}},
		{0x12, 1, []byte{0xfe}}, // not a command: resend
	}
	want := 0
	for _, s := range steps {
		r, err := c.kbdSend(s.send, s.nrep)
		if err != nil || !bytes.Equal(r, s.reply) {
			t.Fatalf("keyboard %#x: %x, %v; want %x", s.send, r, err, s.reply)
		}
		want += s.nrep
	}
	if irqs != want {
		t.Errorf("%d IRQ 1 edges, want one per byte (%d)", irqs, want)
	}
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
}

func TestI8042NoKeyboardStillAnswersNobody(t *testing.T) {
	c, k := newKBC(t, I8042Config{})
	if _, err := c.kbdSend(kbdCmdGetID, 1); err == nil {
		t.Error("GETID answered without a keyboard")
	}
	if err := k.CtrlAltDel(); !errors.Is(err, ErrNoKeyboard) {
		t.Errorf("CtrlAltDel without a keyboard: %v", err)
	}
}

func readAll(c kbc) []byte {
	var r []byte
	for c.in(I8042CommandPort)&i8042StrOBF != 0 {
		r = append(r, c.in(I8042DataPort))
	}
	return r
}

func TestI8042CtrlAltDel(t *testing.T) {
	var irqs int
	c, k := newKBC(t, I8042Config{Keyboard: true, KbdIRQ: IRQFunc(func(high bool) error {
		if high {
			irqs++
		}
		return nil
	})})
	if err := k.CtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(c); !bytes.Equal(got, ctrlAltDelSet1[:]) {
		t.Errorf("translated: guest read %x, want set 1 %x", got, ctrlAltDelSet1)
	}
	if irqs != len(ctrlAltDelSet1) {
		t.Errorf("%d IRQ edges for %d bytes", irqs, len(ctrlAltDelSet1))
	}

	// A guest that turned translation off (i8042.direct) reads set 2.
	if _, err := c.command(i8042CmdWriteCtr, []byte{i8042InitialCtr &^ i8042CtrXlate}, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := k.CtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(c); !bytes.Equal(got, ctrlAltDelSet2[:]) {
		t.Errorf("untranslated: guest read %x, want set 2 %x", got, ctrlAltDelSet2)
	}

	// A guest that does not read: the first sequence waits, the second
	// does not fit.
	if err := k.CtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	if err := k.CtrlAltDel(); !errors.Is(err, ErrKeyboardBusy) {
		t.Errorf("second unread CtrlAltDel: %v, want ErrKeyboardBusy", err)
	}
	if got := readAll(c); !bytes.Equal(got, ctrlAltDelSet2[:]) {
		t.Errorf("after the refused one the guest read %x", got)
	}
}

// TestI8042KeyboardResetWhileTyping: the keyboard's reset drops what it
// had not handed to the controller, as a real keyboard's does; the byte
// already in the controller's output buffer stays.
func TestI8042KeyboardResetWhileTyping(t *testing.T) {
	c, k := newKBC(t, I8042Config{Keyboard: true})
	if err := k.CtrlAltDel(); err != nil {
		t.Fatal(err)
	}
	c.in(I8042DataPort) // 0x1d; 0x38 moves into the output buffer
	c.out(I8042DataPort, kbdCmdReset)
	if got, want := readAll(c), []byte{0x38, 0xfa, 0xaa}; !bytes.Equal(got, want) {
		t.Errorf("reset while typing: guest read %x, want %x", got, want)
	}
}
