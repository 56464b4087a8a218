package devices

import (
	"errors"
	"testing"
)

type kbc struct {
	t   *testing.T
	bus *Bus
}

func (c kbc) in(port uint64) byte {
	c.t.Helper()
	b := []byte{0}
	if !c.bus.Read(port, b) {
		c.t.Fatalf("port %#x not dispatched", port)
	}
	return b[0]
}

func (c kbc) out(port uint64, v byte) {
	c.t.Helper()
	if !c.bus.Write(port, []byte{v}) {
		c.t.Fatalf("port %#x not dispatched", port)
	}
}

var errTimeout = errors.New("i8042 timeout")

// command is Linux's __i8042_command: the command, its parameters, then
// the replies, polling the status register with a bound.
func (c kbc) command(cmd byte, params []byte, nreply int, auxLoop bool) ([]byte, error) {
	c.out(I8042CommandPort, cmd)
	for _, p := range params {
		c.out(I8042DataPort, p)
	}
	var r []byte
	for i := 0; i < nreply; i++ {
		n := 0
		for c.in(I8042CommandPort)&i8042StrOBF == 0 {
			if n++; n > 100 {
				return r, errTimeout
			}
		}
		if auxLoop && c.in(I8042CommandPort)&i8042StrAuxData == 0 {
			return r, errors.New("auxerr")
		}
		r = append(r, c.in(I8042DataPort))
	}
	return r, nil
}

func (c kbc) flush() error {
	for n := 0; c.in(I8042CommandPort)&i8042StrOBF != 0; n++ {
		if n >= 16 {
			return errors.New("flush: output buffer never empties")
		}
		c.in(I8042DataPort)
	}
	return nil
}

func newKBC(t *testing.T, cfg I8042Config) (kbc, *I8042) {
	var b Bus
	k := NewI8042(cfg)
	if err := k.Insert(&b); err != nil {
		t.Fatal(err)
	}
	return kbc{t: t, bus: &b}, k
}

// TestI8042LinuxProbe follows i8042_controller_check, _selftest, _init,
// i8042_check_aux and the keyboard port setup of Linux's i8042 driver.
func TestI8042LinuxProbe(t *testing.T) {
	c, _ := newKBC(t, I8042Config{})
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	r, err := c.command(i8042CmdSelfTest, nil, 1, false)
	if err != nil || r[0] != 0x55 {
		t.Fatalf("self-test: %x %v", r, err)
	}
	// Stable CTR read.
	r1, err1 := c.command(i8042CmdReadCtr, nil, 1, false)
	r2, err2 := c.command(i8042CmdReadCtr, nil, 1, false)
	if err1 != nil || err2 != nil || r1[0] != r2[0] {
		t.Fatalf("CTR reads %x %x", r1, r2)
	}
	ctr := r1[0]
	if c.in(I8042CommandPort)&i8042StrKeylock == 0 {
		t.Error("keylock active")
	}
	if ctr&i8042CtrXlate == 0 {
		t.Error("BIOS CTR without translation")
	}
	ctr = (ctr | i8042CtrKbdDis) &^ i8042CtrKbdInt
	if _, err := c.command(i8042CmdWriteCtr, []byte{ctr}, 0, false); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.command(i8042CmdReadCtr, nil, 1, false); r[0] != ctr {
		t.Errorf("CTR write not kept: %#x vs %#x", r[0], ctr)
	}
	// i8042_check_aux: loopback fails (not AUX data), AUX test reports an
	// error: no AUX port, decided without a timeout.
	c.flush()
	_, err = c.command(i8042CmdAuxLoop, []byte{0x5a}, 1, true)
	if err == nil || errors.Is(err, errTimeout) {
		t.Errorf("AUX loop: %v, want an immediate auxerr", err)
	}
	r, err = c.command(i8042CmdAuxTest, nil, 1, false)
	if err != nil || r[0] == 0 || r[0] == 0xfa || r[0] == 0xff {
		t.Errorf("AUX test %x %v: Linux would think an AUX port exists", r, err)
	}
	// Keyboard port: enable it, with its interrupt.
	ctr = ctr&^i8042CtrKbdDis | i8042CtrKbdInt
	c.command(i8042CmdWriteCtr, []byte{ctr}, 0, false)
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}
	if r, _ := c.command(i8042CmdKbdTest, nil, 1, false); r[0] != 0 {
		t.Errorf("keyboard interface test %#x", r[0])
	}
}

func TestI8042NoKeyboard(t *testing.T) {
	var l line
	c, _ := newKBC(t, I8042Config{KbdIRQ: &l})
	c.out(I8042DataPort, 0xf2) // GET ID to the keyboard
	st := c.in(I8042CommandPort)
	if st&(i8042StrOBF|i8042StrTimeout) != i8042StrOBF|i8042StrTimeout || st&i8042StrAuxData != 0 {
		t.Errorf("status after a keyboard write %#x", st)
	}
	if high, rises := l.state(); !high || rises != 1 {
		t.Error("no IRQ 1 for the keyboard's answer")
	}
	if v := c.in(I8042DataPort); v != 0xfe {
		t.Errorf("answer %#x, want 0xfe", v)
	}
	if high, _ := l.state(); high {
		t.Error("IRQ 1 still high after the read")
	}
	// Keyboard loopback comes back as keyboard data.
	c.out(I8042CommandPort, i8042CmdKbdLoop)
	c.out(I8042DataPort, 0x42)
	if c.in(I8042CommandPort)&i8042StrTimeout != 0 || c.in(I8042DataPort) != 0x42 {
		t.Error("keyboard loopback")
	}
	// Interrupt disabled in the CTR: no IRQ.
	c.command(i8042CmdWriteCtr, []byte{i8042CtrSys}, 0, false)
	_, r0 := l.state()
	c.out(I8042DataPort, 0xff)
	if _, r := l.state(); r != r0 {
		t.Error("IRQ with KBDINT clear")
	}
	if c.in(I8042CommandPort)&i8042StrSys == 0 {
		t.Error("SYS flag not from the CTR")
	}
}

func TestI8042Reset(t *testing.T) {
	var exits []Exit
	c, _ := newKBC(t, I8042Config{Exit: func(e Exit) { exits = append(exits, e) }})
	c.out(I8042CommandPort, 0xff) // pulse nothing
	c.out(I8042DataPort, 0xfe)    // to the keyboard, not a reset
	if len(exits) != 0 {
		t.Fatalf("exits %v", exits)
	}
	c.out(I8042CommandPort, 0xfe)
	if len(exits) != 1 || exits[0] != (Exit{Kind: ExitReset}) {
		t.Fatalf("0xfe to 0x64: exits %v", exits)
	}
	// Output port write with the reset bit low.
	c.out(I8042CommandPort, i8042CmdWriteOut)
	c.out(I8042DataPort, 0x03)
	if len(exits) != 1 {
		t.Fatal("output-port write with reset high reset")
	}
	c.out(I8042CommandPort, i8042CmdWriteOut)
	c.out(I8042DataPort, 0x02)
	if len(exits) != 2 {
		t.Fatal("output-port write with reset low did not reset")
	}
	// Without an ExitFunc, nothing happens.
	c2, _ := newKBC(t, I8042Config{})
	c2.out(I8042CommandPort, 0xfe)
}

func TestI8042Insert(t *testing.T) {
	var b Bus
	b.Insert(0x64, 1, "squatter", &recorder{})
	k := NewI8042(I8042Config{})
	if err := k.Insert(&b); !errors.Is(err, ErrOverlap) {
		t.Fatalf("Insert over a used port: %v", err)
	}
	if len(b.Ranges()) != 1 {
		t.Errorf("half-inserted controller left behind: %v", b.Ranges())
	}
	// A word read of the status port reads 0xff above the first byte.
	data := []byte{0, 0}
	k.CommandPort().Read(0, data)
	if data[1] != 0xff || data[0]&i8042StrKeylock == 0 {
		t.Errorf("word read %x", data)
	}
}
