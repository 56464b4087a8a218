package corral

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/corral-vmm/corral/devices"
	"github.com/corral-vmm/corral/devices/pci"
	"github.com/corral-vmm/corral/kvm"
	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/virtiopci"
)

// Disk is a virtio-blk disk backed by a raw image file or a block device.
type Disk struct {
	// Path is the raw image or block device. It is locked while the machine runs: shared
	// for a read-only disk, exclusive otherwise, so two machines cannot
	// write one image.
	Path string
	// ReadOnly opens the image read-only: guest writes fail with an I/O
	// error and the file is never opened for writing.
	ReadOnly bool
	// Serial is the disk's ID for the guest (at most 20 bytes).
	Serial string
	// Queues is the number of request queues, each served by its own
	// worker (1..blk.MaxQueues); 0 means one per vCPU (at most
	// blk.MaxQueues). A snapshot records the count the guest saw.
	Queues int `json:",omitempty"`
	// Direct opens the image with O_DIRECT, bypassing the host's page
	// cache; the machine fails to start if the file system refuses it.
	Direct bool `json:",omitempty"`
}

// checkQueues reports a queue count out of range.
func (d Disk) checkQueues() error {
	if d.Queues < 0 || d.Queues > blk.MaxQueues {
		return fmt.Errorf("%d queues (want 1..%d, or 0 for one per vCPU)", d.Queues, blk.MaxQueues)
	}
	return nil
}

// queues is the disk's queue count on a machine with cpus vCPUs.
func (d Disk) queues(cpus int) int {
	if d.Queues != 0 {
		return d.Queues
	}
	return min(cpus, blk.MaxQueues)
}

// ParseDisk parses the CLI form PATH[,ro][,serial=ID][,queues=N][,direct]:
// queues=N gives the disk N request queues (default one per vCPU), direct
// opens the image with O_DIRECT.
func ParseDisk(s string) (Disk, error) {
	parts := strings.Split(s, ",")
	d := Disk{Path: parts[0]}
	if d.Path == "" {
		return d, fmt.Errorf("disk %q: no path", s)
	}
	for _, p := range parts[1:] {
		switch k, v, _ := strings.Cut(p, "="); k {
		case "ro":
			d.ReadOnly = true
		case "rw":
			d.ReadOnly = false
		case "serial":
			d.Serial = v
		case "queues":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > blk.MaxQueues {
				return d, fmt.Errorf("disk %q: queues=%s: want a number from 1 to %d", s, v, blk.MaxQueues)
			}
			d.Queues = n
		case "direct":
			d.Direct = true
		default:
			return d, fmt.Errorf("disk %q: unknown option %q (want ro, rw, serial=ID, queues=N or direct)", s, p)
		}
	}
	return d, nil
}

// pciINTxGSI is the first IOAPIC pin for PCI INTx: slots share pins
// 16-23. Linux drives virtio devices through MSI-X; INTx is the fallback.
const pciINTxGSI = 16

// virtioInterrupts gives a virtio PCI function MSI-X vectors over the VM's
// GSI routing and its INTx line.
type virtioInterrupts struct {
	router *msiRouter
	intx   devices.IRQLine
}

func (v virtioInterrupts) NewMSIVector() (virtiopci.MSIVector, error) { return v.router.NewMSIVector() }
func (v virtioInterrupts) INTx() devices.IRQLine                      { return v.intx }

// notifyBinder binds a queue's notify register to an eventfd through
// KVM_IOEVENTFD, so a guest kick does not exit to a vCPU thread.
type notifyBinder struct {
	vm    *kvm.VM
	dying *atomic.Bool // msiRouter.dying: the VM's release unbinds it
}

func (b notifyBinder) BindNotify(gpa uint64, length uint32, q uint16, fd int) (func() error, error) {
	dm := uint64(q)
	ev := kvm.IOEvent{Addr: gpa, Len: length, FD: fd, Datamatch: &dm}
	if err := b.vm.IOEventFD(ev, false); err != nil {
		return nil, err
	}
	return func() error {
		if b.dying.Load() {
			return nil
		}
		return b.vm.IOEventFD(ev, true)
	}, nil
}

// addVirtio puts a virtio device on the PCI bus behind the virtio PCI
// transport, with its BAR placed in the MMIO hole and kept on the MMIO bus
// wherever the guest programs it.
func (m *Machine) addVirtio(name string, dev virtio.Device) error {
	p := m.plat
	slot := len(p.transports) + 1
	var mapper *pci.BusMapper
	t, err := virtiopci.New(virtiopci.Config{
		Device:        dev,
		Mem:           m.mem,
		Interrupts:    virtioInterrupts{router: p.router, intx: irqLine{m.vm, uint32(pciINTxGSI + (slot-1)%8)}},
		Notify:        notifyBinder{vm: m.vm, dying: &p.router.dying},
		OnBARChange:   func(ch pci.BARChange) { mapper.Update(ch) },
		InterruptLine: uint8(pciINTxGSI + (slot-1)%8),
		Logger:        m.log.With("device", name),
	})
	if err != nil {
		dev.Close()
		return fmt.Errorf("corral: %s: %w", name, err)
	}
	p.transports = append(p.transports, t)
	p.devs = append(p.devs, dev)
	mapper = pci.NewBusMapper(name, m.mmio, nil, [6]devices.Device{0: t.BAR()}, m.log)
	if err := pci.AssignBARs(t.ConfigSpace(), p.mmioAlloc, nil); err != nil {
		return fmt.Errorf("corral: %s: placing BARs: %w", name, err)
	}
	if err := p.pci.AddAt(slot, t); err != nil {
		return fmt.Errorf("corral: %s: %w", name, err)
	}
	m.log.Debug("pci device", "name", name, "slot", slot, "bar0", fmt.Sprintf("%#x", t.ConfigSpace().BARAddress(0)))
	return nil
}

// createDisks opens every disk (missing, unreadable or locked images fail
// here, before the machine runs) and puts them on the PCI bus.
func (m *Machine) createDisks() error {
	for i, d := range m.cfg.Disks {
		dev, err := blk.Open(blk.Config{Path: d.Path, ReadOnly: d.ReadOnly, Serial: d.Serial,
			NumQueues: d.queues(m.cfg.cpus()), Direct: d.Direct,
			Logger: m.log.With("device", fmt.Sprintf("disk%d", i))})
		if err != nil {
			return fmt.Errorf("corral: disk %d (%s): %w", i, d.Path, err)
		}
		if err := m.addVirtio(fmt.Sprintf("virtio-blk %d", i), dev); err != nil {
			return err
		}
	}
	return nil
}

// closeTransports closes every virtio function: their devices stop, flush
// completed writes to their backends and release them.
func (p *platform) closeTransports() error {
	var errs []error
	for _, t := range p.transports {
		if err := t.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	p.transports = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("corral: closing virtio devices: %w", err)
	}
	return nil
}
