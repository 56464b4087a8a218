package corral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/corral-vmm/corral/snapshot"
)

// Sections of a machine snapshot (docs/snapshot-format.md has the
// container; these are the root package's sections in it).
const (
	sectionMachine = "machine"     // savedMachine, JSON
	sectionVM      = "vm"          // kvm.VMState
	sectionVCPU    = "vcpu."       // + index: kvm.VCPUState
	sectionDevice  = "dev."        // + device name: the device's own encoding
	machineFormat  = 1             // savedMachine.Format this corral writes and reads
	maxSavedCPUs   = MaxCPUs       // bounds on what a snapshot may claim
	maxSavedDevs   = maxPCIDevices // virtio functions
)

// savedMachine is the guest-visible configuration of a snapshotted machine
// and what the restore must rebuild the same way: the device set in slot
// order and each NIC's addresses. Host-side choices (console, name,
// inventory, TTL) are the restorer's.
type savedMachine struct {
	Format       int          `json:"format"`
	SourceID     string       `json:"source_id"`
	SourceName   string       `json:"source_name,omitempty"`
	Kernel       string       `json:"kernel"`
	KernelSHA256 string       `json:"kernel_sha256,omitempty"`
	Initrd       string       `json:"initrd,omitempty"`
	Cmdline      string       `json:"cmdline"`
	CPUs         int          `json:"cpus"`
	Memory       uint64       `json:"memory"`
	NoACPI       bool         `json:"no_acpi,omitempty"`
	Disks        []Disk       `json:"disks,omitempty"`
	Nets         []savedNet   `json:"nets,omitempty"`
	Vsock        *savedVsock  `json:"vsock,omitempty"`
	Shares       []savedShare `json:"shares,omitempty"`
	// Devices are the dev.* sections, in restore order.
	Devices []string `json:"devices"`
}

// savedNet is a NIC as the guest knows it: its MAC, the host side's MAC
// (the guest's ARP cache holds it), the link's addresses.
type savedNet struct {
	Kind    string   `json:"kind"` // "tap" or "handed-over" (a File or Backend: the restorer gives a new one)
	Tap     string   `json:"tap,omitempty"`
	MAC     string   `json:"mac"`
	HostMAC string   `json:"host_mac,omitempty"`
	Host    string   `json:"host,omitempty"`  // prefix
	Guest   string   `json:"guest,omitempty"` // address
	Bridge  string   `json:"bridge,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	NoDHCP  bool     `json:"no_dhcp,omitempty"`
	// QueuePairs is the queue pairs the NIC offered (0 in snapshots from
	// before multiqueue: one).
	QueuePairs int `json:"queue_pairs,omitempty"`
}

type savedVsock struct {
	CID uint64 `json:"cid"`
}

type savedShare struct {
	Tag      string   `json:"tag"`
	Path     string   `json:"path"`
	ReadOnly bool     `json:"read_only,omitempty"`
	Empty    []string `json:"empty,omitempty"`
}

// Snapshot saves a paused machine to dir, which must not exist or be
// empty: every vCPU's state, the VM's interrupt controllers, PIT and clock,
// every device's state and guest memory (a sparse file). The machine stays
// paused; Resume lets it run on. Disks are not copied: a restore opens the
// same images, so keep them unchanged (or copy them) while a snapshot may be
// restored. A machine whose guest has a 9p share mounted cannot be
// snapshotted (9P file handles cannot be carried over); ErrNotPaused when
// it is running.
func (m *Machine) Snapshot(ctx context.Context, dir string) error {
	p := &m.pause
	p.op.Lock()
	defer p.op.Unlock()
	if err := m.runningErr(); err != nil {
		return err
	}
	if !m.Paused() {
		return ErrNotPaused
	}
	t0 := time.Now()
	w, err := snapshot.Create(dir)
	if err != nil {
		return fmt.Errorf("corral: snapshot: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	if err := m.writeSnapshot(ctx, w); err != nil {
		return fmt.Errorf("corral: snapshot %s: %w", dir, err)
	}
	if err := w.Commit(); err != nil {
		return fmt.Errorf("corral: snapshot: %w", err)
	}
	ok = true
	abs, _ := filepath.Abs(dir)
	m.log.Info("vm.snapshot", "id", m.id, "dir", abs, "took", time.Since(t0))
	m.auditEvent("vm.snapshot", slog.String("dir", abs))
	return nil
}

func (m *Machine) writeSnapshot(ctx context.Context, w *snapshot.Writer) error {
	sm, err := m.savedMachine()
	if err != nil {
		return err
	}
	devs := m.plat.statefulDevices()
	for _, d := range devs {
		b, err := d.dev.SaveState()
		if err != nil {
			return fmt.Errorf("device %s: %w", d.name, err)
		}
		if err := w.AddSection(sectionDevice+d.name, b); err != nil {
			return err
		}
		sm.Devices = append(sm.Devices, d.name)
	}
	b, err := json.Marshal(sm)
	if err != nil {
		return fmt.Errorf("encoding the machine section: %w", err)
	}
	if err := w.AddSection(sectionMachine, b); err != nil {
		return err
	}
	vs, err := m.vm.SaveState()
	if err != nil {
		return err
	}
	if b, err = vs.MarshalBinary(); err != nil {
		return err
	}
	if err := w.AddSection(sectionVM, b); err != nil {
		return err
	}
	for i, v := range m.vcpus {
		st, err := v.SaveState(m.msrIndices)
		if err != nil {
			return err
		}
		if b, err = st.MarshalBinary(); err != nil {
			return err
		}
		if err := w.AddSection(sectionVCPU+strconv.Itoa(i), b); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return w.WriteMemory(m.mem)
}

// savedMachine describes the machine for its snapshot.
func (m *Machine) savedMachine() (*savedMachine, error) {
	c := &m.cfg
	sm := &savedMachine{
		Format: machineFormat, SourceID: m.id, SourceName: c.Name,
		Kernel: absPath(c.Kernel), Initrd: c.Initrd, Cmdline: c.Cmdline,
		CPUs: c.cpus(), Memory: c.memory(), NoACPI: c.NoACPI,
	}
	if r, ok := m.InventoryRecord(); ok {
		sm.KernelSHA256 = r.KernelSHA256
	}
	if sm.Initrd != "" {
		sm.Initrd = absPath(sm.Initrd)
	}
	for _, d := range c.Disks {
		d.Path = absPath(d.Path)
		d.Queues = d.queues(c.cpus()) // the count the guest saw, not "one per vCPU"
		sm.Disks = append(sm.Disks, d)
	}
	for i, n := range m.plat.nics {
		cn := c.Nets[i]
		s := savedNet{Kind: "tap", MAC: n.mac.String(), Bridge: cn.Bridge, NoDHCP: cn.NoDHCP}
		s.QueuePairs, _ = n.dev.QueuePairs() // the count the guest saw, not "one per vCPU"
		if cn.File != nil || cn.Backend != nil {
			s.Kind = "handed-over"
		}
		if cn.Tap != "" {
			s.Tap = cn.Tap
		}
		if n.hostMAC != nil {
			s.HostMAC = n.hostMAC.String()
		}
		if n.host.IsValid() {
			s.Host = n.host.String()
		}
		if n.guest.IsValid() {
			s.Guest = n.guest.String()
		}
		for _, a := range cn.DNS {
			s.DNS = append(s.DNS, a.String())
		}
		sm.Nets = append(sm.Nets, s)
	}
	if c.Vsock != nil {
		sm.Vsock = &savedVsock{CID: m.plat.vsock.CID()}
	}
	for _, s := range c.Shares {
		sm.Shares = append(sm.Shares, savedShare{Tag: s.Tag, Path: absPath(s.Path), ReadOnly: s.ReadOnly, Empty: s.Empty})
	}
	return sm, nil
}

// check validates a decoded machine section: a snapshot is untrusted input
// until it is known to be one of ours.
func (sm *savedMachine) check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("machine section: "+format, args...)
	}
	if sm.Format != machineFormat {
		return bad("format %d, this corral reads %d", sm.Format, machineFormat)
	}
	if sm.CPUs < 1 || sm.CPUs > maxSavedCPUs {
		return bad("%d vCPUs, want 1..%d", sm.CPUs, maxSavedCPUs)
	}
	if sm.Memory < 1<<20 || sm.Memory > MaxMemory || sm.Memory%4096 != 0 {
		return bad("memory %d bytes is not a valid guest RAM size", sm.Memory)
	}
	if n := len(sm.Disks) + len(sm.Nets) + len(sm.Shares); n > maxSavedDevs {
		return bad("%d devices, the PCI bus holds %d", n, maxSavedDevs)
	}
	for i, n := range sm.Nets {
		if _, err := net.ParseMAC(n.MAC); err != nil {
			return bad("net %d: MAC %q: %v", i, n.MAC, err)
		}
		if n.HostMAC != "" {
			if _, err := net.ParseMAC(n.HostMAC); err != nil {
				return bad("net %d: host MAC %q: %v", i, n.HostMAC, err)
			}
		}
		if n.Host != "" {
			if _, err := netip.ParsePrefix(n.Host); err != nil {
				return bad("net %d: host %q: %v", i, n.Host, err)
			}
		}
		if n.Guest != "" {
			if _, err := netip.ParseAddr(n.Guest); err != nil {
				return bad("net %d: guest %q: %v", i, n.Guest, err)
			}
		}
		for _, d := range n.DNS {
			if _, err := netip.ParseAddr(d); err != nil {
				return bad("net %d: DNS %q: %v", i, d, err)
			}
		}
		if n.Kind != "tap" && n.Kind != "handed-over" {
			return bad("net %d: kind %q", i, n.Kind)
		}
	}
	if len(sm.Devices) > 64 {
		return bad("%d device sections", len(sm.Devices))
	}
	seen := map[string]bool{}
	for _, d := range sm.Devices {
		if d == "" || len(d) > 32 || strings.ContainsAny(d, "/ \x00") || seen[d] {
			return bad("device section name %q", d)
		}
		seen[d] = true
	}
	return nil
}

// stateful is a device whose state a snapshot carries.
type stateful interface {
	SaveState() ([]byte, error)
	RestoreState([]byte) error
}

type namedState struct {
	name string
	dev  stateful
}

// statefulDevices lists every device with state, in restore order: the
// PCI host bridge and each virtio function (config space, transport,
// device) before the legacy devices whose restore may raise an interrupt.
func (p *platform) statefulDevices() []namedState {
	d := []namedState{{"pci-host", p.pci}}
	for i, t := range p.transports {
		d = append(d, namedState{fmt.Sprintf("pci.%d", i+1), t})
	}
	d = append(d,
		namedState{"rtc", p.rtc},
		namedState{"i8042", p.kbd},
		namedState{"com1", p.serial},
	)
	return d
}

// errSnapshotDevices is wrapped when a snapshot's device list does not
// match the machine its configuration builds.
var errSnapshotDevices = errors.New("the snapshot's devices differ from the machine its configuration builds")
