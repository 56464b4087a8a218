package pci

import (
	"bytes"
	"errors"
	"testing"

	"github.com/corral-vmm/corral/devices"
)

// FuzzRestoreState gives RestoreState arbitrary bytes: a ConfigSpace's
// (fuzzDevice's layout) when which is even, a HostBridge's when odd.
// Nothing may panic; an error must wrap devices.ErrBadState and change
// nothing (no hook call either); accepted input must be exactly what
// SaveState then returns, keep every read-only bit, and leave the BAR hook's
// view equal to the registers.
func FuzzRestoreState(f *testing.F) {
	cs := fuzzDevice(f)
	guestProgram(cs)
	st, _ := cs.SaveState()
	f.Add(byte(0), st)
	hb, _ := NewHostBridge(nil).SaveState()
	f.Add(byte(1), hb)
	f.Fuzz(func(t *testing.T, which byte, data []byte) {
		cs := fuzzDevice(t)
		var hooked [barCountStandard]BARMapping
		calls := 0
		cs.OnBARChange(func(ch BARChange) {
			calls++
			hooked[ch.Index] = ch.New
		})
		var d interface {
			SaveState() ([]byte, error)
			RestoreState([]byte) error
		} = cs
		if which%2 == 1 {
			h := NewHostBridge(nil)
			d, cs = h, h.Device(0).(*ConfigSpace)
		}
		var before [ConfigSize]byte
		cs.ReadConfig(0, before[:])
		saved, _ := d.SaveState()
		if err := d.RestoreState(data); err != nil {
			if !errors.Is(err, devices.ErrBadState) {
				t.Fatalf("error %v does not wrap devices.ErrBadState", err)
			}
			if after, _ := d.SaveState(); !bytes.Equal(saved, after) || calls != 0 {
				t.Fatalf("refused state changed the device (hook calls %d)", calls)
			}
			return
		}
		if got, _ := d.SaveState(); !bytes.Equal(got, data) {
			t.Fatalf("accepted state\n%x\nsaves back as\n%x", data, got)
		}
		var after [ConfigSize]byte
		cs.ReadConfig(0, after[:])
		for i := range after {
			ro := ^cs.wmask[i] &^ cs.w1c[i]
			if i == StatusOffset {
				ro &^= statusInterrupt
			}
			if (after[i]^before[i])&ro != 0 {
				t.Fatalf("restore changed read-only bits of byte %#x: %#02x -> %#02x", i, before[i], after[i])
			}
		}
		for i := range hooked {
			if m := cs.BARMapping(i); m.Mapped != hooked[i].Mapped || m.Mapped && m.Addr != hooked[i].Addr {
				t.Fatalf("BAR %d maps %+v, hook last reported %+v", i, m, hooked[i])
			}
		}
	})
}
