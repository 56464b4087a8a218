package pci

import (
	"encoding/binary"
	"fmt"

	"github.com/corral-vmm/corral/devices"
)

// ConfigSpace state encoding, version 1 (little-endian):
//
//	0   "PCFG"
//	4   u16 version
//	6   six BAR declarations of 10 bytes: kind, prefetchable (0 or 1), u64 size
//	66  the 256 bytes of configuration space
const (
	configStateMagic   = "PCFG"
	configStateVersion = 1

	configStBARs    = 6
	configStBARSize = 10
	configStData    = configStBARs + barCountStandard*configStBARSize
	configStSize    = configStData + ConfigSize

	configStateWhat = "pci: config space"
)

// SaveState returns the configuration space's registers with the BAR
// declarations they go with.
func (c *ConfigSpace) SaveState() ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := make([]byte, configStSize)
	copy(b, devices.StateHeader(configStateMagic, configStateVersion))
	for i, bar := range c.bars {
		e := b[configStBARs+i*configStBARSize:]
		e[0] = byte(bar.Kind)
		if bar.Prefetchable {
			e[1] = 1
		}
		binary.LittleEndian.PutUint64(e[2:], bar.Size)
	}
	copy(b[configStData:], c.data[:])
	return b, nil
}

// RestoreState loads registers SaveState returned into a configuration
// space built the same way (same header, BARs and capabilities). The saved
// registers may differ from this one's only where a guest can write (the
// writable masks), in write-1-to-clear status bits and in the Interrupt
// Status bit (restored as saved: a device that drives INTx sets it again
// as it restores its interrupt state); anything else means another device
// or a corrupt snapshot, and is refused with nothing changed. BAR mappings
// that change are reported to the OnBARChange hook, exactly as when a guest
// writes the registers, so the BARs' regions follow onto the buses.
func (c *ConfigSpace) RestoreState(data []byte) error {
	if err := devices.CheckStateHeader(configStateWhat, data, configStateMagic, configStateVersion, configStSize); err != nil {
		return err
	}
	if len(data) != configStSize {
		return stateErr("%d bytes, want %d", len(data), configStSize)
	}
	var err error
	c.mutate(func() {
		if err = c.checkState(data); err == nil {
			copy(c.data[:], data[configStData:])
		}
	})
	return err
}

// checkState validates a saved state against this configuration space; mu held.
func (c *ConfigSpace) checkState(data []byte) error {
	for i, bar := range c.bars {
		e := data[configStBARs+i*configStBARSize:]
		saved := BAR{Kind: BARKind(e[0]), Size: binary.LittleEndian.Uint64(e[2:])}
		switch e[1] {
		case 0:
		case 1:
			saved.Prefetchable = true
		default:
			return stateErr("BAR %d prefetchable flag %#x is not 0 or 1", i, e[1])
		}
		if saved != bar {
			return stateErr("BAR %d saved as %v size %#x prefetchable=%v, this device's is %v size %#x prefetchable=%v",
				i, saved.Kind, saved.Size, saved.Prefetchable, bar.Kind, bar.Size, bar.Prefetchable)
		}
	}
	regs := data[configStData:]
	for o := range ConfigSize {
		free := c.wmask[o] | c.w1c[o]
		if o == StatusOffset {
			free |= statusInterrupt
		}
		if (regs[o]^c.data[o])&^free != 0 {
			return stateErr("%s (byte %#02x) saved as %#02x, but this device's read-only bits there are %#02x (writable %#02x)",
				c.registerName(o), o, regs[o], c.data[o]&^free, free)
		}
	}
	return nil
}

// registerName names the register holding byte o, for errors; mu held.
func (c *ConfigSpace) registerName(o int) string {
	switch {
	case o < DeviceIDOffset:
		return "vendor ID"
	case o < CommandOffset:
		return "device ID"
	case o < StatusOffset:
		return "command"
	case o < RevisionOffset:
		return "status"
	case o == RevisionOffset:
		return "revision"
	case o < CacheLineOffset:
		return "class code"
	case o == CacheLineOffset:
		return "cache line size"
	case o == LatencyTimerOffset:
		return "latency timer"
	case o == HeaderTypeOffset:
		return "header type"
	case o == HeaderTypeOffset+1:
		return "BIST"
	case o < BAR0Offset+4*barCountStandard:
		return fmt.Sprintf("BAR %d", (o-BAR0Offset)/4)
	case o < SubsystemVendorOff:
		return "CardBus CIS pointer"
	case o < SubsystemIDOffset:
		return "subsystem vendor ID"
	case o < ExpansionROMOffset:
		return "subsystem ID"
	case o < CapabilitiesOffset:
		return "expansion ROM BAR"
	case o == CapabilitiesOffset:
		return "capabilities pointer"
	case o < InterruptLineOffset:
		return "reserved header byte"
	case o == InterruptLineOffset:
		return "interrupt line"
	case o == InterruptPinOffset:
		return "interrupt pin"
	case o < FirstCapabilityOffset:
		return "Min_Gnt/Max_Lat"
	}
	// The capability starting at or before o, following this device's
	// list (its layout is fixed at construction).
	best := 0
	for p, n := int(c.data[CapabilitiesOffset]), 0; p >= FirstCapabilityOffset && p < ConfigSize && n < ConfigSize/4; p, n = int(c.data[p+1]), n+1 {
		if p <= o && p > best {
			best = p
		}
		if p+1 >= ConfigSize {
			break
		}
	}
	if best == 0 {
		return "device-specific register"
	}
	return fmt.Sprintf("capability %#02x at %#02x byte %d", c.data[best], best, o-best)
}

// stateErr formats a RestoreState error about the configuration space.
func stateErr(format string, args ...any) error {
	return fmt.Errorf("%s state: %s: %w", configStateWhat, fmt.Sprintf(format, args...), devices.ErrBadState)
}
