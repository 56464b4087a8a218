package devices

import "testing"

type exitLog []Exit

func (l *exitLog) fn(e Exit) { *l = append(*l, e) }

func TestDebugExit(t *testing.T) {
	var l exitLog
	var b Bus
	if err := b.Insert(DebugExitPort, DebugExitSize, "debug-exit", NewDebugExit(l.fn)); err != nil {
		t.Fatal(err)
	}
	data := []byte{0}
	if !b.Read(DebugExitPort, data) || data[0] != 0xff || len(l) != 0 {
		t.Errorf("read %#x, exits %v", data[0], l)
	}
	b.Write(DebugExitPort, []byte{0x31})
	if len(l) != 1 || l[0] != (Exit{Kind: ExitDebug, Code: 0x31}) {
		t.Fatalf("exits %v", l)
	}
	// A word write uses its low byte; a write at 0xf5 does nothing.
	b.Write(DebugExitPort, []byte{0x07, 0x01})
	b.Write(DebugExitPort+1, []byte{0x09})
	if len(l) != 2 || l[1].Code != 7 {
		t.Errorf("word write: %v", l)
	}
	if !b.Write(DebugExitPort, []byte{0, 0, 0, 0}) || len(l) != 3 || l[2].Code != 0 {
		t.Errorf("dword write: %v", l)
	}
	if s := l[1].String(); s != "debug-exit code 7" {
		t.Errorf("String %q", s)
	}
	NewDebugExit(nil).Write(0, []byte{1}) // no callback: nothing, no panic
}

func TestACPIS5(t *testing.T) {
	var l exitLog
	a := NewACPISleepControl(5, l.fn)
	for _, v := range []byte{
		0x80,      // WAK_STS to the shared status register
		5 << 2,    // S5 without SLP_EN
		1<<2 | 32, // S1 with SLP_EN
		3<<2 | 32, // S3
		0x20,      // S0
	} {
		a.Write(0, []byte{v})
	}
	if len(l) != 0 {
		t.Fatalf("exits before S5: %v", l)
	}
	a.Write(0, []byte{0x34})
	if len(l) != 1 || l[0] != (Exit{Kind: ExitPowerOff}) {
		t.Fatalf("0x34: exits %v", l)
	}
	a.Write(0, []byte{0x34 | 0x80 | 0x03}) // other bits don't matter
	if len(l) != 2 {
		t.Error("S5 with extra bits ignored")
	}
	// Another firmware's S5 value.
	b := NewACPISleepControl(7, l.fn)
	b.Write(0, []byte{0x34})
	if len(l) != 2 {
		t.Error("SLP_TYP 5 powered off a machine whose S5 is 7")
	}
	b.Write(0, []byte{7<<2 | 0x20})
	if len(l) != 3 {
		t.Error("SLP_TYP 7 did not power off")
	}
	data := []byte{0xaa}
	a.Read(0, data)
	if data[0] != 0 {
		t.Errorf("read %#x", data[0])
	}
	if ExitPowerOff.String() != "power-off" || ExitKind(9).String() != "ExitKind(9)" {
		t.Error("ExitKind names")
	}
}
