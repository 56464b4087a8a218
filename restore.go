package corral

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"github.com/corral-vmm/corral/internal/guestlog"
	"github.com/corral-vmm/corral/kvm"
	"github.com/corral-vmm/corral/snapshot"
)

// RestoreConfig is what a restored machine takes from its caller rather
// than from its snapshot: everything on the host side. The guest side
// (kernel, command line, vCPUs, memory, devices, MACs and addresses) is
// the snapshot's.
type RestoreConfig struct {
	// Name, Labels, StateDir, NoInventory, TTL, Console, ConsoleIn, Logger
	// and KVMDevice are as in Config. The restored machine is a new machine
	// with an ID of its own.
	Name        string
	Labels      map[string]string
	StateDir    string
	NoInventory bool
	TTL         time.Duration
	Console     io.Writer
	ConsoleIn   io.Reader
	Logger      *slog.Logger
	KVMDevice   string

	// Nets, when set, gives a host side to each saved NIC, in order (Tap,
	// Backend, File, Bridge, Host); MAC and IP are the snapshot's. When
	// nil, each NIC gets a fresh TAP with the saved addresses and MACs
	// (the saved TAP name only if one was given), so the guest's network
	// configuration holds; a NIC that had a handed-over File or Backend
	// must be given one here.
	Nets []Net
	// Disks, when set, replaces the saved disks' paths and Direct, one per
	// disk, in order (for copies of the images); nil opens the saved paths.
	Disks []Disk
	// VsockUDSPath is the restored machine's hybrid-vsock socket (the
	// source's may still be in use); empty gives none.
	VsockUDSPath string
	// Shares, when set, gives the host directory of saved shares by tag
	// (and their Empty directories, when not nil); others open their
	// saved directories.
	Shares []Share
	// VerifyMemory checks the memory file's checksums before anything
	// runs. It reads every page the snapshot holds, so restore time grows
	// with the memory the guest had touched; without it, a damaged memory
	// file goes unnoticed (the state file is always verified).
	VerifyMemory bool
}

// restoreInfo is what a restored machine keeps of its snapshot.
type restoreInfo struct {
	dir   string
	saved *savedMachine
}

// Restore builds a machine from the snapshot in dir: guest memory is mapped
// copy-on-write from the snapshot's memory file (pages load as the guest
// touches them, and restores of one snapshot share them until they
// write), every vCPU, the VM and every device get their saved state. Start
// runs it from where the snapshot was taken; the guest's clock has moved
// on by the time in between, a vsock device resets its connections
// (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET), NICs get fresh TAPs with their
// saved MACs and DHCP leases. The snapshot directory must not change while
// the machine runs. Restore refuses a snapshot of another format version,
// one whose CPUID this host cannot give, and a damaged one.
func Restore(ctx context.Context, dir string, rc RestoreConfig) (*Machine, error) {
	t0 := time.Now()
	snap, err := snapshot.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("corral: restore: %w", err)
	}
	defer snap.Close()
	sm, err := readSavedMachine(snap)
	if err != nil {
		return nil, fmt.Errorf("corral: restore %s: %w", dir, err)
	}
	if rc.VerifyMemory {
		if err := snap.VerifyMemory(); err != nil {
			return nil, fmt.Errorf("corral: restore: %w", err)
		}
	}
	cfg, err := sm.config(rc)
	if err != nil {
		return nil, fmt.Errorf("%w: restore %s: %w", ErrConfig, dir, err)
	}
	if err := cfg.validateDevices(); err != nil {
		return nil, err
	}
	id, err := newID()
	if err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(dir)
	m := &Machine{id: id, name: cfg.Name, cfg: cfg, done: make(chan struct{}), restored: &restoreInfo{dir: abs, saved: sm}}
	if m.name == "" {
		m.name = id
	}
	m.pause.init()
	m.log = cfg.logger().With("vm", m.name)
	m.glog = guestlog.New(m.log, nil)
	ok := false
	defer func() {
		if !ok {
			m.release()
		}
	}()
	mem, err := snap.MapMemory()
	if err != nil {
		return nil, fmt.Errorf("corral: restore: %w", err)
	}
	if err := m.createVM(mem); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, step := range []func() error{m.createPlatform, m.createDisks, m.createNets, m.createVsock, m.createShares} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	if err := m.restoreVCPUs(snap, sm); err != nil {
		return nil, fmt.Errorf("corral: restore %s: %w", dir, err)
	}
	if err := m.restoreDevices(snap, sm); err != nil {
		return nil, fmt.Errorf("corral: restore %s: %w", dir, err)
	}
	// The clock last: the guest's time continues from here.
	b, err := snap.Section(sectionVM)
	if err != nil {
		return nil, fmt.Errorf("corral: restore: %w", err)
	}
	var vs kvm.VMState
	if err := vs.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("corral: restore %s: section %q: %w", dir, sectionVM, err)
	}
	// The guest's clock moves on by the time since the snapshot, as
	// the guest's wall clock would have.
	advanced := vs.Clock.Advance(uint64(time.Now().UnixNano()))
	if err := m.vm.RestoreState(&vs); err != nil {
		return nil, fmt.Errorf("corral: restore: %w", err)
	}
	m.resumeOnStart = true
	ok = true
	m.log.Info("vm.restored", "id", m.id, "snapshot", abs, "source", sm.SourceID,
		"cpus", sm.CPUs, "memory", FormatSize(sm.Memory), "clock_advanced", advanced, "took", time.Since(t0))
	return m, nil
}

// readSavedMachine decodes and checks the machine section.
func readSavedMachine(snap *snapshot.Snapshot) (*savedMachine, error) {
	b, err := snap.Section(sectionMachine)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var sm savedMachine
	if err := dec.Decode(&sm); err != nil {
		return nil, fmt.Errorf("machine section: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("machine section: data after the JSON object")
	}
	if err := sm.check(); err != nil {
		return nil, err
	}
	return &sm, nil
}

// config builds the restored machine's configuration: the guest side from
// the snapshot, the host side from rc.
func (sm *savedMachine) config(rc RestoreConfig) (Config, error) {
	c := Config{
		Name: rc.Name, Labels: rc.Labels, StateDir: rc.StateDir, NoInventory: rc.NoInventory, TTL: rc.TTL,
		Console: rc.Console, ConsoleIn: rc.ConsoleIn, Logger: rc.Logger, KVMDevice: rc.KVMDevice,
		Kernel: sm.Kernel, Initrd: sm.Initrd, Cmdline: sm.Cmdline,
		CPUs: sm.CPUs, Memory: sm.Memory, NoACPI: sm.NoACPI,
	}
	c.Disks = append([]Disk(nil), sm.Disks...)
	for i := range c.Disks {
		if c.Disks[i].Queues == 0 {
			c.Disks[i].Queues = 1 // saved before disks had a queue per vCPU
		}
	}
	if rc.Disks != nil {
		if len(rc.Disks) != len(sm.Disks) {
			return c, fmt.Errorf("%d disks given, the snapshot has %d", len(rc.Disks), len(sm.Disks))
		}
		for i, d := range rc.Disks {
			// The guest saw the saved disk's mode, serial and queues;
			// O_DIRECT is the host's choice.
			c.Disks[i].Path, c.Disks[i].Direct = d.Path, d.Direct
		}
	}
	if rc.Nets != nil && len(rc.Nets) != len(sm.Nets) {
		return c, fmt.Errorf("%d NICs given, the snapshot has %d", len(rc.Nets), len(sm.Nets))
	}
	for i, sn := range sm.Nets {
		var n Net
		if rc.Nets != nil {
			n = rc.Nets[i]
		} else {
			if sn.Kind != "tap" {
				return c, fmt.Errorf("NIC %d had a handed-over descriptor or backend: give it a host side (RestoreConfig.Nets)", i)
			}
			n.Tap, n.Bridge = sn.Tap, sn.Bridge
			if sn.Host != "" {
				n.Host = netip.MustParsePrefix(sn.Host)
			}
		}
		n.MAC, _ = net.ParseMAC(sn.MAC)
		if sn.Guest != "" {
			n.IP = netip.MustParseAddr(sn.Guest)
		}
		n.NoDHCP = sn.NoDHCP
		n.Queues = max(sn.QueuePairs, 1) // 0: saved before multiqueue, with one pair
		n.DNS = nil
		for _, d := range sn.DNS {
			n.DNS = append(n.DNS, netip.MustParseAddr(d))
		}
		c.Nets = append(c.Nets, n)
	}
	if sm.Vsock != nil {
		c.Vsock = &Vsock{CID: sm.Vsock.CID, UDSPath: rc.VsockUDSPath}
	}
	byTag := map[string]Share{}
	for _, s := range rc.Shares {
		byTag[s.Tag] = s
	}
	for _, s := range sm.Shares {
		sh := Share{Tag: s.Tag, Path: s.Path, ReadOnly: s.ReadOnly, Empty: s.Empty}
		if o, ok := byTag[s.Tag]; ok {
			sh.Path = o.Path
			if o.Empty != nil {
				sh.Empty = o.Empty
			}
			delete(byTag, s.Tag)
		}
		c.Shares = append(c.Shares, sh)
	}
	for tag := range byTag {
		return c, fmt.Errorf("share %q is not in the snapshot (shares cannot be added on restore)", tag)
	}
	return c, nil
}

// restoredHostMAC is the saved host-side MAC of NIC index on a restored
// machine, nil otherwise.
func (m *Machine) restoredHostMAC(index int) net.HardwareAddr {
	if m.restored == nil || index >= len(m.restored.saved.Nets) {
		return nil
	}
	mac, err := net.ParseMAC(m.restored.saved.Nets[index].HostMAC)
	if err != nil {
		return nil
	}
	return mac
}

// restoreVCPUs creates each vCPU and gives it its saved state, after
// checking that this host can give the CPUID the guest saw.
func (m *Machine) restoreVCPUs(snap *snapshot.Snapshot, sm *savedMachine) error {
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	if m.msrIndices, err = m.sys.MSRIndexList(); err != nil {
		return err
	}
	for i := 0; i < sm.CPUs; i++ {
		name := sectionVCPU + strconv.Itoa(i)
		b, err := snap.Section(name)
		if err != nil {
			return err
		}
		var st kvm.VCPUState
		if err := st.UnmarshalBinary(b); err != nil {
			return fmt.Errorf("section %q: %w", name, err)
		}
		if err := kvm.CheckCPUID(st.CPUID, supported); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
		v, err := m.vm.CreateVCPU(i)
		if err != nil {
			return err
		}
		m.vcpus = append(m.vcpus, v)
		if err := v.RestoreState(&st); err != nil {
			return fmt.Errorf("vCPU %d: %w", i, err)
		}
	}
	return nil
}

// restoreDevices gives every device its saved state. The device set must
// be the one the snapshot was taken of, in the same order.
func (m *Machine) restoreDevices(snap *snapshot.Snapshot, sm *savedMachine) error {
	devs := m.plat.statefulDevices()
	if len(devs) != len(sm.Devices) {
		return fmt.Errorf("%w: %d saved, %d built", errSnapshotDevices, len(sm.Devices), len(devs))
	}
	for i, d := range devs {
		if sm.Devices[i] != d.name {
			return fmt.Errorf("%w: saved device %d is %q, built %q", errSnapshotDevices, i, sm.Devices[i], d.name)
		}
		b, err := snap.Section(sectionDevice + d.name)
		if err != nil {
			return err
		}
		if err := d.dev.RestoreState(b); err != nil {
			return fmt.Errorf("device %s: %w", d.name, err)
		}
	}
	return nil
}
