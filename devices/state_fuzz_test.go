package devices

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// stateful is a device with a saved state.
type stateful interface {
	SaveState() ([]byte, error)
	RestoreState([]byte) error
}

// fuzzStateDevice returns a fresh device of kind which%4: a serial port, an
// RTC, an i8042 without and one with a keyboard.
func fuzzStateDevice(which byte) (stateful, Device) {
	switch which % 4 {
	case 0:
		s := NewSerial(SerialConfig{InBuffer: 32})
		return s, s
	case 1:
		r := NewRTC(RTCConfig{Clock: (&fakeClock{t: time.Date(2040, 2, 29, 12, 0, 0, 0, time.UTC), step: time.Millisecond}).now})
		return r, r
	case 2:
		k := NewI8042(I8042Config{})
		return k, k.DataPort()
	}
	k := NewI8042(I8042Config{Keyboard: true})
	return k, k.DataPort()
}

// FuzzRestoreState gives each legacy device's RestoreState arbitrary bytes
// (which picks the device). Nothing may panic; an error must wrap
// ErrBadState and leave the device as it was; accepted input must be
// exactly what SaveState then returns, and restore into a second fresh
// device to the same state.
func FuzzRestoreState(f *testing.F) {
	for which := range byte(4) {
		d, _ := fuzzStateDevice(which)
		st, err := d.SaveState()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(which, st)
	}
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		d, port := fuzzStateDevice(which)
		before, err := d.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		if err := d.RestoreState(data); err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v does not wrap ErrBadState", err)
			}
			if after, _ := d.SaveState(); !bytes.Equal(before, after) {
				t.Fatalf("refused state changed the device: %x -> %x", before, after)
			}
			return
		}
		got, err := d.SaveState()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("accepted state\n%x\nsaves back as\n%x", data, got)
		}
		d2, _ := fuzzStateDevice(which)
		if err := d2.RestoreState(got); err != nil {
			t.Fatalf("a saved state does not restore: %v", err)
		}
		// The restored device still works: a guest poking it must not panic.
		for off := range uint64(2) {
			b := []byte{0}
			port.Read(off, b)
			port.Write(off, []byte{0xff})
		}
	})
}
