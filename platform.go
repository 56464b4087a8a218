package corral

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/virtio/virtiopci"
)

// platform is the machine's device set: the buses and what sits on them,
// plus the goroutines that serve devices off the vCPU threads.
type platform struct {
	serial *devices.Serial
	pci    *pci.HostBridge
	router *msiRouter
	in     io.Reader

	mmioAlloc  *pci.Allocator         // places PCI BARs in the MMIO hole
	transports []*virtiopci.Transport // virtio functions on the PCI bus, slot = index+1
	nics       []*nic                 // virtio-net devices' host sides

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// exitFunc turns a device's request to end the VM into the machine's exit.
func (m *Machine) exitFunc() devices.ExitFunc {
	return func(e devices.Exit) {
		switch e.Kind {
		case devices.ExitDebug:
			m.end(Exit{Reason: ExitDebug, Code: e.Code})
		case devices.ExitPowerOff:
			m.end(Exit{Reason: ExitPowerOff, Detail: "ACPI S5"})
		default:
			m.end(Exit{Reason: ExitReset, Detail: "guest reset"})
		}
	}
}

// createPlatform builds the buses and the legacy devices:
//
//	0x060, 0x064  i8042 (reset ends the VM)
//	0x070-0x071   CMOS RTC
//	0x0f4         debug-exit port
//	0x3c0         ACPI sleep control (S5 powers off)
//	0x3f8-0x3ff   COM1 16550A, IRQ 4
//	0xcf8-0xcff   PCI configuration mechanism #1, bus 0
func (m *Machine) createPlatform() error {
	ctx, cancel := context.WithCancel(context.Background())
	p := &platform{ctx: ctx, cancel: cancel, in: m.cfg.ConsoleIn, router: newMSIRouter(m.vm)}
	m.plat = p
	alloc, err := pci.NewAllocator(boot.MMIOBase, boot.MMIOSize)
	if err != nil {
		return fmt.Errorf("corral: MMIO window: %w", err)
	}
	p.mmioAlloc = alloc
	m.pio, m.mmio = &devices.Bus{}, &devices.Bus{}
	exit := m.exitFunc()
	p.serial = devices.NewSerial(devices.SerialConfig{
		IRQ: irqLine{m.vm, devices.COM1IRQ},
		Out: m.cfg.Console,
		Log: m.log.With("device", "com1"),
	})
	low, high := uint64(0), uint64(0)
	for _, r := range boot.RAMRanges(m.cfg.memory()) {
		if r.GPA == 0 {
			low = r.Size
		} else {
			high += r.Size
		}
	}
	kbd := devices.NewI8042(devices.I8042Config{Exit: exit, KbdIRQ: irqLine{m.vm, 1}})
	p.pci = pci.NewHostBridge(func() { exit(devices.Exit{Kind: devices.ExitReset}) })
	inserts := []struct {
		base, size uint64
		name       string
		dev        devices.Device
	}{
		{devices.COM1Port, devices.SerialPortsSize, "com1", p.serial},
		{devices.DebugExitPort, devices.DebugExitSize, "debug-exit", devices.NewDebugExit(exit)},
		{0x70, 2, "rtc", devices.NewRTC(devices.RTCConfig{LowRAM: low, HighRAM: high})},
		{boot.ACPISleepControlPort, 1, "acpi-sleep", devices.NewACPISleepControl(boot.ACPISleepTypeS5, exit)},
		{pci.ConfigAddressPort, pci.PortsSize, "pci-cfg", p.pci},
	}
	for _, d := range inserts {
		if err := m.pio.Insert(d.base, d.size, d.name, d.dev); err != nil {
			return fmt.Errorf("corral: placing %s: %w", d.name, err)
		}
	}
	return kbd.Insert(m.pio)
}

// start runs the device goroutines: console output, and console input when
// the configuration has it.
func (p *platform) start() {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		_ = p.serial.Run(p.ctx)
	}()
	if p.in != nil {
		// Not in wg: a reader without deadlines may block past the
		// machine's end; it returns on the caller's next input or close.
		// Its error (EOF, a deadline, cancellation) is the console's end,
		// not the machine's failure.
		go func() { _ = p.serial.InputFrom(p.ctx, p.in) }()
	}
}

// close stops the device goroutines, closes the virtio devices (their
// completed writes reach the backends), flushes the console and releases
// device resources.
func (p *platform) close() error {
	if p.cancel != nil {
		p.cancel()
	}
	err := p.closeTransports()
	if d, ok := p.in.(interface{ SetReadDeadline(time.Time) error }); ok {
		_ = d.SetReadDeadline(time.Now())
	}
	p.wg.Wait()
	if p.serial != nil {
		p.serial.Flush()
	}
	return err
}
