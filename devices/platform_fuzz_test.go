package devices

import (
	"testing"
	"time"
)

// FuzzPlatformPorts sends a guest's sequence of port accesses to every
// legacy device on one I/O bus: the i8042, the RTC, the debug-exit port,
// the ACPI sleep register and COM1. Each operation is 3 bytes: which port
// and access width, then a value. Nothing may panic, every exit must be a
// kind the devices define, and the RTC's registers must read back as the
// time they encode.
func FuzzPlatformPorts(f *testing.F) {
	f.Add([]byte{0x09, 0x0b, 0, 0x0a, 0x86, 0, 0x09, 0x00, 0, 0x0b, 0, 0})
	f.Add([]byte{0x01, 0xd1, 0, 0x00, 0x00, 0, 0x01, 0xfe, 0})
	f.Add([]byte{0x20, 0x34, 0, 0x18, 0x05, 0})
	ports := []uint64{
		I8042DataPort, I8042CommandPort, RTCPort, RTCPort + 1,
		DebugExitPort, 0x3c0, COM1Port, COM1Port + 2, COM1Port + 5, COM1Port + 7,
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		var exits []Exit
		exit := func(e Exit) {
			if e.Kind < ExitReset || e.Kind > ExitDebug {
				t.Fatalf("exit of unknown kind %v", e)
			}
			exits = append(exits, e)
		}
		clk := &fakeClock{t: time.Date(2099, 12, 31, 23, 59, 58, 0, time.UTC), step: 300 * time.Millisecond}
		var b Bus
		rtc := NewRTC(RTCConfig{Clock: clk.now})
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(NewI8042(I8042Config{Exit: exit, KbdIRQ: NoIRQ{}}).Insert(&b))
		must(b.Insert(RTCPort, RTCPortsSize, "rtc", rtc))
		must(b.Insert(DebugExitPort, DebugExitSize, "debug-exit", NewDebugExit(exit)))
		must(b.Insert(0x3c0, 1, "acpi", NewACPISleepControl(5, exit)))
		must(b.Insert(COM1Port, SerialPortsSize, "com1", NewSerial(SerialConfig{OutBuffer: 64})))
		for len(ops) >= 3 {
			port := ports[int(ops[0]&0x0f)%len(ports)] + uint64(ops[0]>>6)
			width := 1 << ((ops[0] >> 4) & 3)
			data := make([]byte, width)
			fill(data, ops[1])
			if ops[2]&1 == 0 {
				b.Write(port, data)
			} else {
				b.Read(port, data)
			}
			ops = ops[3:]
		}
		// Whatever the guest did: status D reads "valid", the i8042 input
		// buffer is never busy, and the RTC's registers decode to the
		// time they claim (encode and decode agree in the guest's mode).
		d := []byte{0}
		b.Write(RTCPort, []byte{cmosStatusD})
		b.Read(RTCPort+1, d)
		if d[0] != rtcDVRT {
			t.Fatalf("status D %#x", d[0])
		}
		b.Read(I8042CommandPort, d)
		if d[0]&0x02 != 0 {
			t.Fatalf("i8042 status %#x: input buffer busy", d[0])
		}
		rtc.mu.Lock()
		snap := rtc.snap
		got := rtc.decode(rtc.encode(snap))
		rtc.mu.Unlock()
		if y := snap.Year(); y >= 0 && y < 10000 && !got.Equal(snap) {
			t.Fatalf("RTC shows %v as registers that read back as %v", snap, got)
		}
	})
}
