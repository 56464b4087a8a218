package virtiopci

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/guestmem"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/internal/testdriver"
)

// FuzzTransport feeds a guest's register accesses to the transport: each
// op is 12 bytes: kind (bit 0: write, bit 1: BAR rather than configuration
// space), le16 offset, size selector (1, 2, 4 or 8 bytes; configuration
// space takes 1, 2, 4 at aligned offsets, as the host bridge delivers them),
// le64 value. Invariants: no panic or hang, status reads are consistent,
// and the device is only active after FEATURES_OK with VERSION_1.
func FuzzTransport(f *testing.F) {
	for _, s := range transportSeeds() {
		f.Add(s)
	}
	backing := make([]byte, 1<<16)
	mem, err := guestmem.New(guestmem.Region{GPA: 0, Data: backing})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ops []byte) {
		dev := newFakeDevice(2)
		tr, err := New(Config{Device: dev, Mem: mem, Interrupts: &fakeInterrupts{}})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		bar := tr.BAR()
		var buf [8]byte
		for len(ops) >= 12 {
			op := ops[:12]
			ops = ops[12:]
			write, inBAR := op[0]&1 != 0, op[0]&2 != 0
			off := uint64(binary.LittleEndian.Uint16(op[1:]))
			n := 1 << (op[3] % 4)
			binary.LittleEndian.PutUint64(buf[:], binary.LittleEndian.Uint64(op[4:]))
			data := buf[:n]
			if inBAR {
				off %= BARSize
				if off+uint64(n) > BARSize {
					continue
				}
				if write {
					bar.Write(off, data)
				} else {
					bar.Read(off, data)
				}
				continue
			}
			if n == 8 {
				n = 4
				data = buf[:4]
			}
			coff := int(off%256) &^ (n - 1)
			if write {
				tr.WriteConfig(coff, data)
			} else {
				tr.ReadConfig(coff, data)
			}
		}
		var st [1]byte
		bar.Read(commonOffset+ccDeviceStatus, st[:])
		if a, n := dev.lastActivation(); n > 0 {
			if a.Features&virtio.FVersion1 == 0 || a.Features&^dev.features != 0 {
				t.Fatalf("device activated with features %#x", a.Features)
			}
			if len(a.Queues) != dev.nq {
				t.Fatalf("activation with %d queues", len(a.Queues))
			}
		}
	})
}

// transportSeeds: a full driver initialisation with MSI-X, a reset, and a
// bad queue layout.
func transportSeeds() [][]byte {
	op := func(kind byte, off uint16, size byte, v uint64) []byte {
		b := []byte{kind, byte(off), byte(off >> 8), size}
		return binary.LittleEndian.AppendUint64(b, v)
	}
	const cfgW, barW, barR = 1, 3, 2
	sz := map[int]byte{1: 0, 2: 1, 4: 2, 8: 3}
	init := func(descAlign uint64) []byte {
		var s []byte
		s = append(s, op(barW, ccDeviceStatus, sz[1], 1)...)
		s = append(s, op(barW, ccDeviceStatus, sz[1], 3)...)
		s = append(s, op(barW, ccDriverFeatureSelect, sz[4], 1)...)
		s = append(s, op(barW, ccDriverFeature, sz[4], 1)...) // VERSION_1
		s = append(s, op(barW, ccDeviceStatus, sz[1], 11)...)
		s = append(s, op(barR, ccDeviceStatus, sz[1], 0)...)
		s = append(s, op(barW, ccQueueSelect, sz[2], 0)...)
		s = append(s, op(barW, ccQueueSize, sz[2], 16)...)
		s = append(s, op(barW, ccQueueDesc, sz[4], 0x1000+descAlign)...)
		s = append(s, op(barW, ccQueueDriver, sz[4], 0x2000)...)
		s = append(s, op(barW, ccQueueDevice, sz[4], 0x3000)...)
		s = append(s, op(barW, ccQueueMSIXVector, sz[2], 0)...)
		s = append(s, op(barW, ccQueueEnable, sz[2], 1)...)
		s = append(s, op(barW, msixTableOffset, sz[8], 0xfee00000)...)
		s = append(s, op(barW, msixTableOffset+8, sz[4], 0x41)...)
		s = append(s, op(barW, msixTableOffset+12, sz[4], 0)...)
		s = append(s, op(cfgW, 0x4, sz[2], 0x6)...)
		s = append(s, op(barW, ccDeviceStatus, sz[1], 15)...)
		s = append(s, op(barW, notifyOffset, sz[2], 0)...)
		s = append(s, op(barR, isrOffset, sz[1], 0)...)
		return s
	}
	return [][]byte{
		init(0),
		init(8),
		append(init(0), op(barW, ccDeviceStatus, sz[1], 0)...),
		op(cfgW, 0x10, sz[4], 0xffffffff),
	}
}

func TestTransportFuzzSeeds(t *testing.T) {
	testdriver.SeedCorpus(t, "FuzzTransport", transportSeeds())
}

// FuzzTransportRestoreState restores arbitrary bytes into a fresh
// function (2 queues, over the memory the valid seed was saved with).
// Invariants: no panic; errors are one line; a state that restores can be
// resumed, paused, saved again, and that state restores into another
// fresh function.
func FuzzTransportRestoreState(f *testing.F) {
	state, mem := savedFake(f)
	f.Add(state)
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := New(Config{Device: newPausable(2), Mem: mem, Interrupts: &fakeInterrupts{}})
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if err := tr.RestoreState(data); err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("multi-line error %q", err)
			}
			return
		}
		if err := tr.Resume(); err != nil {
			t.Fatalf("Resume after restore: %v", err)
		}
		if err := tr.Pause(); err != nil {
			t.Fatalf("Pause: %v", err)
		}
		again, err := tr.SaveState()
		if err != nil {
			t.Fatalf("SaveState of a restored function: %v", err)
		}
		tr2, err := New(Config{Device: newPausable(2), Mem: mem, Interrupts: &fakeInterrupts{}})
		if err != nil {
			t.Fatal(err)
		}
		defer tr2.Close()
		if err := tr2.RestoreState(again); err != nil {
			t.Fatalf("state saved from a restored function does not restore: %v", err)
		}
	})
}
