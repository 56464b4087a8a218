package corral

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/corral-vmm/corral/boot"
	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/internal/console"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/virtiopci"
	"github.com/corral-vmm/corral/virtio/vsock"
)

// platform is the machine's device set: the buses and what sits on them,
// plus the goroutines that serve devices off the vCPU threads.
type platform struct {
	serial  *devices.Serial
	pci     *pci.HostBridge
	router  *msiRouter
	in      *console.Input // Config.ConsoleIn made stoppable; nil without it
	outFile *os.File       // our non-blocking copy of an *os.File Console
	conTee  *consoleTee    // the serial port's output: Console and the inventory's console log
	started bool           // the console goroutines run
	log     *slog.Logger

	mmioAlloc  *pci.Allocator         // places PCI BARs in the MMIO hole
	transports []*virtiopci.Transport // virtio functions on the PCI bus, slot = index+1
	nics       []*nic                 // virtio-net devices' host sides
	vsock      *vsock.Device          // Config.Vsock's device; nil without it
	kbd        *devices.I8042         // the i8042, with a keyboard for RequestPowerOff
	rtc        *devices.RTC           // the CMOS RTC, for snapshots
	devs       []virtio.Device        // every virtio device, in slot order, for Metrics

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
	p := &platform{ctx: ctx, cancel: cancel, router: newMSIRouter(m.vm), log: m.log}
	m.plat = p
	alloc, err := pci.NewAllocator(boot.MMIOBase, boot.MMIOSize)
	if err != nil {
		return fmt.Errorf("corral: MMIO window: %w", err)
	}
	p.mmioAlloc = alloc
	m.pio, m.mmio = &devices.Bus{}, &devices.Bus{}
	exit := m.exitFunc()
	if err := p.createConsole(m.cfg.Console, m.cfg.ConsoleIn, irqLine{m.vm, devices.COM1IRQ}); err != nil {
		return err
	}
	low, high := uint64(0), uint64(0)
	for _, r := range boot.RAMRanges(m.cfg.memory()) {
		if r.GPA == 0 {
			low = r.Size
		} else {
			high += r.Size
		}
	}
	kbd := devices.NewI8042(devices.I8042Config{Exit: exit, KbdIRQ: irqLine{m.vm, 1}, Keyboard: true})
	p.kbd = kbd
	p.rtc = devices.NewRTC(devices.RTCConfig{LowRAM: low, HighRAM: high})
	p.pci = pci.NewHostBridge(func() { exit(devices.Exit{Kind: devices.ExitReset}) })
	inserts := []struct {
		base, size uint64
		name       string
		dev        devices.Device
	}{
		{devices.COM1Port, devices.SerialPortsSize, "com1", p.serial},
		{devices.DebugExitPort, devices.DebugExitSize, "debug-exit", devices.NewDebugExit(exit)},
		{0x70, 2, "rtc", p.rtc},
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

// createConsole builds COM1 with its host side. An *os.File Console is
// written through a private non-blocking copy, so a blocked write can be
// cut short with a deadline without touching the caller's descriptor.
// ConsoleIn must be one the machine can stop reading (console.NewInput).
func (p *platform) createConsole(out io.Writer, in io.Reader, irq devices.IRQLine) error {
	if f, ok := out.(*os.File); ok && f != nil {
		if pf, err := console.Reopen(f, os.O_WRONLY); err == nil {
			p.outFile, out = pf, pf
		}
	}
	if in != nil {
		ci, err := console.NewInput(in)
		if err != nil {
			return fmt.Errorf("%w: ConsoleIn: %w; push input with Machine.ConsoleInput instead", ErrConfig, err)
		}
		p.in = ci
	}
	p.conTee = &consoleTee{out: out}
	out = p.conTee
	p.serial = devices.NewSerial(devices.SerialConfig{
		IRQ: irq,
		Out: out,
		Log: p.log.With("device", "com1"),
	})
	return nil
}

// start runs the device goroutines: console output, and console input when
// the configuration has it.
func (p *platform) start() {
	p.started = true
	go func() { _ = p.serial.Run(p.ctx) }() // waited for, bounded, in close
	if p.in != nil {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			// Its error (EOF, Stop, cancellation) is the console's end,
			// not the machine's failure.
			_ = p.serial.InputFrom(p.ctx, p.in)
		}()
	}
}

// close stops the device goroutines, closes the virtio devices (their
// completed writes reach the backends), flushes the console for at most
// its FlushTimeout and releases device resources. It never waits on a
// console Write that cannot be cut short.
func (p *platform) close() error {
	if p.cancel != nil {
		p.cancel()
	}
	err := p.closeTransports()
	if p.in != nil {
		p.in.Stop()
	}
	p.wg.Wait()
	if p.in != nil {
		p.in.Release()
	}
	runEnded := !p.started
	if p.started {
		// Run bounds its flush with FlushTimeout; the margin covers a
		// Write that returns just at its deadline.
		runEnded = p.serial.WaitRun(p.serial.FlushTimeout() + 250*time.Millisecond)
		if !runEnded && p.log != nil {
			p.log.Warn("console: the Console writer is blocked and has no write deadline; its goroutine ends when that Write returns", "stats", p.serial.Stats())
		}
	}
	if p.outFile != nil && runEnded {
		_ = p.outFile.Close()
	}
	return err
}

// ConsoleStats counts the bytes through the serial console (COM1).
type ConsoleStats struct {
	Out       uint64 // bytes the guest wrote to the console
	Written   uint64 // bytes Config.Console took
	OutLost   uint64 // guest output dropped: Console stalled, failed, or could not take it by the end
	Refused   uint64 // bytes the guest wrote while the transmitter showed itself full
	In        uint64 // input bytes accepted for the guest (ConsoleIn, ConsoleInput)
	InDropped uint64 // ConsoleInput bytes dropped because the guest was not reading
}

// ConsoleStats returns the console's byte counters; valid at any time,
// also after the machine ended.
func (m *Machine) ConsoleStats() ConsoleStats {
	st := m.plat.serial.Stats()
	return ConsoleStats{Out: st.TX, Written: st.Written, OutLost: st.OutLost, Refused: st.TXDropped, In: st.RX, InDropped: st.InDropped}
}

// ConsoleInput returns a writer that types into the guest's serial console,
// for input a caller reads itself (a terminal behind an escape filter, an
// io.Pipe, any reader the machine could not unblock). Its Write never
// blocks and never fails: what the receive FIFO and the 4 KiB input buffer
// cannot take while the guest is not reading is dropped and counted in
// ConsoleStats.InDropped.
func (m *Machine) ConsoleInput() io.Writer { return consoleInput{m.plat.serial} }

type consoleInput struct{ s *devices.Serial }

func (c consoleInput) Write(p []byte) (int, error) {
	c.s.Inject(p)
	return len(p), nil
}
