// Package tap is the host side of a virtio-net device: a Linux TAP device,
// opened through /dev/net/tun, that implements virtionet.Backend.
//
// Open either uses an existing TAP (Config.Name names one) or creates one
// for the VM (named "corral" plus 8 random hex digits unless Config.Name
// gives a free name). It brings the TAP up, can give the host side an
// address (the guest's gateway) and attach it to an existing bridge, all
// through netlink. With IFF_VNET_HDR (the default) each frame carries a
// 12-byte virtio-net header and the checksum and TSO offloads TUNSETOFFLOAD
// accepts are offered to the guest.
//
// Multiqueue. With Config.Queues above 1 the TAP is opened with
// IFF_MULTI_QUEUE: one descriptor per queue, each from TUNSETIFF on the
// same name, and the Tap is a virtionet.MultiQueue, one queue per queue
// pair. The kernel spreads the host's frames over the attached queues by
// flow hash; the device detaches (TUNSETQUEUE) the queues of pairs the
// guest does not use. An existing multi-queue TAP is attached with as many
// queues as asked; an existing single-queue TAP takes only one
// (ErrSingleQueue).
//
// Cleanup, crash included. A TAP that Corral creates is never persistent
// (TUNSETPERSIST 0): the kernel deletes it, with its addresses, routes and
// bridge membership, when its last file descriptor closes, and that happens
// when Corral exits however it exits (the descriptor is close-on-exec, so no
// child keeps it alive). So there are no leftovers to find on a later run,
// and none is searched for. Created TAPs carry the alias "corral:<pid>" so
// an operator can tell whose they are while they exist. On an existing TAP,
// Close undoes what Open changed (address added, bridge attached, link
// brought up); a crash leaves those changes on the user's device.
//
// Privileges: creating a TAP, adding addresses and bridging need
// CAP_NET_ADMIN; attaching to an existing TAP that is already up, without an
// address or bridge to set, needs only the TAP's owner uid or group. A
// refusal is ErrNoPrivilege, saying what was refused.
package tap

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
)

// NamePrefix starts the names of TAPs Corral creates without a given name.
const NamePrefix = "corral"

// Config says which TAP to use and how to set up its host side.
type Config struct {
	// Name is the TAP to use if it exists, or to create otherwise; ""
	// creates one named NamePrefix plus 8 random hex digits. At most 15
	// bytes.
	Name string
	// Address is given to the host side of the TAP, e.g. 10.200.3.1/24 (the
	// guest's gateway and DHCP server); the zero Prefix adds none. An
	// address overlapping one on another interface is refused
	// (ErrSubnetInUse).
	Address netip.Prefix
	// Bridge attaches the TAP to this existing bridge; "" attaches none.
	Bridge string
	// MAC is the host side's MAC for a TAP Corral creates (nil keeps the
	// kernel's random one). An existing TAP keeps its own; see Tap.MAC.
	MAC net.HardwareAddr
	// MTU for a TAP Corral creates (0 keeps the kernel's 1500). An existing
	// TAP keeps its own; see Tap.MTU.
	MTU int
	// NoVnetHdr opens the TAP without IFF_VNET_HDR: no offloads are
	// offered and the device adds and strips virtio-net headers itself.
	NoVnetHdr bool
	// Queues is how many queues to open, 1..virtionet.MaxQueuePairs; 0
	// means 1. More than one makes (or needs) a multi-queue TAP.
	Queues int
	// Logger receives what Open and Close change; nil discards it.
	Logger *slog.Logger
}

// Tap is an open TAP device. It implements virtionet.MultiQueue; ReadFrame,
// WriteFrame and SetDeadline, queue 0's, come from the embedded
// FileBackend.
type Tap struct {
	*virtionet.FileBackend
	queues   []*virtionet.FileBackend // queues 1.. of a multi-queue TAP
	multi    bool                     // attached with IFF_MULTI_QUEUE
	name     string
	index    int
	mac      net.HardwareAddr
	mtu      int
	created  bool
	vnetHdr  bool
	offloads virtionet.Offload
	log      *slog.Logger

	nl   *netlink.Handle
	undo []undoStep // what Open changed on an existing TAP, in order

	closeOnce sync.Once
	closeErr  error
}

type undoStep struct {
	what string
	do   func() error
}

var _ virtionet.MultiQueue = (*Tap)(nil)

// Open opens or creates the TAP and sets up its host side. On error nothing
// it changed is left behind.
func Open(cfg Config) (_ *Tap, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The handle's sockets live in the network namespace of the calling
	// thread, as does the TAP: Close works from any thread.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tap: netlink: %w", err)
	}
	nq := max(cfg.Queues, 1)
	t := &Tap{nl: nl, log: log, vnetHdr: !cfg.NoVnetHdr, multi: nq > 1}
	fd := -1
	var extra []int // queues 1.. while Open may fail
	defer func() {
		if err != nil {
			t.rollback()
			if fd >= 0 {
				unix.Close(fd)
			}
			for _, f := range extra {
				unix.Close(f)
			}
			for _, q := range t.queues {
				q.Close()
			}
			nl.Close()
		}
	}()

	existing, err := t.lookupExisting(cfg.Name)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		mq := existing.(*netlink.Tuntap).Flags&netlink.TUNTAP_MULTI_QUEUE != 0
		if nq > 1 && !mq {
			return nil, fmt.Errorf("%w: %s was made without multi_queue; asked for %d queues (recreate it with ip tuntap add ... multi_queue, or use one queue)", ErrSingleQueue, cfg.Name, nq)
		}
		t.multi = mq
	}
	if fd, err = openTun(); err != nil {
		return nil, err
	}
	switch {
	case existing != nil:
		t.name, err = setIff(fd, cfg.Name, t.vnetHdr, false, t.multi)
	case cfg.Name != "":
		t.name, err = setIff(fd, cfg.Name, t.vnetHdr, true, t.multi)
		t.created = err == nil
	default:
		for try := 0; ; try++ {
			t.name, err = setIff(fd, randomName(), t.vnetHdr, true, t.multi)
			if err == nil || !errors.Is(err, ErrExists) || try == 7 {
				break
			}
		}
		t.created = err == nil
	}
	if err != nil {
		return nil, err
	}
	for range nq - 1 {
		qfd, err := openTun()
		if err != nil {
			return nil, err
		}
		extra = append(extra, qfd)
		if _, err := setIff(qfd, t.name, t.vnetHdr, false, true); err != nil {
			return nil, fmt.Errorf("queue %d: %w", len(extra), err)
		}
	}
	if t.created {
		// Non-persistent is the default; say so, so nothing outlives us.
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0); err != nil {
			return nil, fmt.Errorf("tap: TUNSETPERSIST 0 on %s: %w", t.name, err)
		}
	}
	if t.vnetHdr {
		if t.offloads, err = setVnetHdr(fd); err != nil {
			return nil, fmt.Errorf("%w (on %s)", err, t.name)
		}
	}
	link, err := nl.LinkByName(t.name)
	if err != nil {
		return nil, fmt.Errorf("tap: find %s after TUNSETIFF: %w", t.name, err)
	}
	if t.created {
		err = t.setUpCreated(link, cfg)
	} else {
		log.Info("tap: using existing TAP", "name", t.name)
	}
	if err == nil && cfg.Bridge != "" {
		err = t.attachBridge(link, cfg.Bridge)
	}
	if err == nil {
		err = t.bringUp(link)
	}
	if err == nil && cfg.Address.IsValid() {
		err = t.addAddress(link, cfg.Address)
	}
	if err != nil {
		return nil, err
	}
	if link, err = nl.LinkByIndex(link.Attrs().Index); err != nil {
		return nil, fmt.Errorf("tap: re-read %s: %w", t.name, err)
	}
	t.index = link.Attrs().Index
	t.mac = append(net.HardwareAddr(nil), link.Attrs().HardwareAddr...)
	t.mtu = link.Attrs().MTU

	for len(extra) > 0 {
		f := os.NewFile(uintptr(extra[0]), fmt.Sprintf("/dev/net/tun:%s:%d", t.name, len(t.queues)+1))
		extra = extra[1:] // f owns it now
		q, err := virtionet.NewFileBackend(f, t.vnetHdr)
		if err != nil {
			f.Close()
			return nil, err
		}
		t.queues = append(t.queues, q)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+t.name)
	fd = -1 // f owns it now
	if t.FileBackend, err = virtionet.NewFileBackend(f, t.vnetHdr); err != nil {
		f.Close()
		return nil, err
	}
	log.Info("tap: ready", "name", t.name, "created", t.created, "vnet_hdr", t.vnetHdr, "queues", nq, "multi_queue", t.multi,
		"offloads", fmt.Sprintf("%#x", t.offloads), "address", cfg.Address, "bridge", cfg.Bridge)
	return t, nil
}

// openTun opens /dev/net/tun for one queue.
func openTun() (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
			return -1, fmt.Errorf("%w: open /dev/net/tun: %v", ErrNoTunDevice, err)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return -1, fmt.Errorf("%w: open /dev/net/tun: %v", ErrNoPrivilege, err)
		}
		return -1, fmt.Errorf("tap: open /dev/net/tun: %w", err)
	}
	return fd, nil
}

// CheckName reports a name that is not a valid Linux interface name (""
// passes: Open then picks one).
func CheckName(name string) error {
	if len(name) >= unix.IFNAMSIZ || strings.ContainsAny(name, "/ \t\n:%") || name == "." || name == ".." {
		return fmt.Errorf("tap: interface name %q is not a valid Linux interface name (at most %d bytes, no '/', ':', '%%' or spaces)", name, unix.IFNAMSIZ-1)
	}
	return nil
}

func (c *Config) check() error {
	if err := CheckName(c.Name); err != nil {
		return err
	}
	if len(c.Bridge) >= unix.IFNAMSIZ {
		return fmt.Errorf("tap: bridge name %q is longer than %d bytes", c.Bridge, unix.IFNAMSIZ-1)
	}
	if c.MAC != nil && (len(c.MAC) != 6 || c.MAC[0]&1 != 0 || [6]byte(c.MAC) == [6]byte{}) {
		return fmt.Errorf("tap: MAC %v is not a unicast Ethernet address", c.MAC)
	}
	if c.Queues < 0 || c.Queues > virtionet.MaxQueuePairs {
		return fmt.Errorf("tap: %d queues (want 1..%d)", c.Queues, virtionet.MaxQueuePairs)
	}
	if c.MTU != 0 && (c.MTU < virtionet.MinMTU || c.MTU > virtionet.MaxMTU) {
		return fmt.Errorf("tap: MTU %d outside %d..%d", c.MTU, virtionet.MinMTU, virtionet.MaxMTU)
	}
	if c.Address.IsValid() && c.Address.Addr().Zone() != "" {
		return fmt.Errorf("tap: address %v has a zone", c.Address)
	}
	return nil
}

func randomName() string {
	var b [4]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
	return NamePrefix + hex.EncodeToString(b[:])
}

// lookupExisting returns the named TAP if it exists (nil if not), refusing
// an interface that is not a TAP.
func (t *Tap) lookupExisting(name string) (netlink.Link, error) {
	if name == "" {
		return nil, nil
	}
	link, err := t.nl.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil, nil
		}
		return nil, fmt.Errorf("tap: look up %s: %w", name, err)
	}
	tt, ok := link.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, fmt.Errorf("%w: %s is a %s device", ErrNotTap, name, link.Type())
	}
	return tt, nil
}

// setUpCreated marks a TAP Corral created and applies its MAC and MTU.
func (t *Tap) setUpCreated(link netlink.Link, cfg Config) error {
	if err := t.nl.LinkSetAlias(link, fmt.Sprintf("corral:%d", os.Getpid())); err != nil {
		return t.netlinkErr("set alias of", err)
	}
	if cfg.MAC != nil {
		if err := t.nl.LinkSetHardwareAddr(link, cfg.MAC); err != nil {
			return t.netlinkErr(fmt.Sprintf("set MAC %v on", cfg.MAC), err)
		}
	}
	if cfg.MTU != 0 {
		if err := t.nl.LinkSetMTU(link, cfg.MTU); err != nil {
			return t.netlinkErr(fmt.Sprintf("set MTU %d on", cfg.MTU), err)
		}
	}
	t.log.Info("tap: created TAP", "name", t.name)
	return nil
}

func (t *Tap) attachBridge(link netlink.Link, bridge string) error {
	br, err := t.nl.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("tap: bridge %s: %w", bridge, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("tap: %s is a %s device, not a bridge", bridge, br.Type())
	}
	switch m := link.Attrs().MasterIndex; m {
	case br.Attrs().Index:
		return nil // already there; nothing to undo
	case 0:
	default:
		return fmt.Errorf("tap: %s is already attached to interface %d, not bridge %s", t.name, m, bridge)
	}
	if err := t.nl.LinkSetMaster(link, br); err != nil {
		return t.netlinkErr("attach to bridge "+bridge+":", err)
	}
	t.addUndo("detach from bridge "+bridge, func() error { return t.nl.LinkSetNoMaster(link) })
	t.log.Info("tap: attached to bridge", "name", t.name, "bridge", bridge)
	return nil
}

func (t *Tap) bringUp(link netlink.Link) error {
	if link.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := t.nl.LinkSetUp(link); err != nil {
		return t.netlinkErr("bring up", err)
	}
	t.addUndo("bring down", func() error { return t.nl.LinkSetDown(link) })
	return nil
}

// addAddress gives the host side its address, refusing one that overlaps an
// address on another interface.
func (t *Tap) addAddress(link netlink.Link, p netip.Prefix) error {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := t.nl.AddrList(nil, family)
	if err != nil {
		return fmt.Errorf("tap: list host addresses: %w", err)
	}
	for _, a := range addrs {
		if a.LinkIndex == link.Attrs().Index || a.IPNet == nil {
			continue
		}
		ap, ok := prefixOf(a.IPNet)
		if ok && ap.Overlaps(p) {
			name := fmt.Sprint(a.LinkIndex)
			if l, err := t.nl.LinkByIndex(a.LinkIndex); err == nil {
				name = l.Attrs().Name
			}
			return fmt.Errorf("%w: %v overlaps %v on %s", ErrSubnetInUse, p, ap, name)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if err := t.nl.AddrAdd(link, addr); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil // it was there before us: leave it there after us
		}
		return t.netlinkErr(fmt.Sprintf("add address %v to", p), err)
	}
	if !t.created {
		t.addUndo(fmt.Sprintf("remove address %v", p), func() error { return t.nl.AddrDel(link, addr) })
	}
	t.log.Info("tap: address added", "name", t.name, "address", p)
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones).Masked(), true
}

func (t *Tap) netlinkErr(what string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%w: %s %s: %v", ErrNoPrivilege, what, t.name, err)
	}
	return fmt.Errorf("tap: %s %s: %w", what, t.name, err)
}

// addUndo records a change to an existing TAP that Close must revert. A TAP
// Corral created needs no undo: it disappears with its descriptor.
func (t *Tap) addUndo(what string, do func() error) {
	if !t.created {
		t.undo = append(t.undo, undoStep{what, do})
	}
}

// rollback reverts the recorded changes, newest first.
func (t *Tap) rollback() error {
	var errs []error
	for i := len(t.undo) - 1; i >= 0; i-- {
		if err := t.undo[i].do(); err != nil {
			errs = append(errs, fmt.Errorf("tap: %s on %s: %w", t.undo[i].what, t.name, err))
		}
	}
	t.undo = nil
	return errors.Join(errs...)
}

// Name returns the TAP's interface name.
func (t *Tap) Name() string { return t.name }

// Index returns the TAP's interface index.
func (t *Tap) Index() int { return t.index }

// MAC returns the host side's MAC address (the DHCP server's ServerMAC when
// the TAP carries the server's address).
func (t *Tap) MAC() net.HardwareAddr { return append(net.HardwareAddr(nil), t.mac...) }

// MTU returns the TAP's MTU (give the device the same).
func (t *Tap) MTU() int { return t.mtu }

// Created reports whether Open created the TAP (it disappears on Close).
func (t *Tap) Created() bool { return t.created }

// VnetHdr reports whether frames carry a virtio-net header.
func (t *Tap) VnetHdr() bool { return t.vnetHdr }

// Offloads returns the offloads TUNSETOFFLOAD accepted when probed.
func (t *Tap) Offloads() virtionet.Offload { return t.offloads }

// SetOffload sets the offloads the kernel may use in frames it gives Corral
// (TUNSETOFFLOAD): the ones the guest accepted.
func (t *Tap) SetOffload(o virtionet.Offload) error {
	if !t.vnetHdr {
		return t.FileBackend.SetOffload(o)
	}
	if o&^t.offloads != 0 {
		return fmt.Errorf("tap: offloads %#x not supported by %s (has %#x)", o, t.name, t.offloads)
	}
	if err := t.Control(func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tunFlags(o)) }); err != nil {
		return fmt.Errorf("tap: TUNSETOFFLOAD %#x on %s: %w", tunFlags(o), t.name, err)
	}
	return nil
}

// NumQueues returns how many queues the Tap has open.
func (t *Tap) NumQueues() int { return len(t.queues) + 1 }

// Queue returns queue i (0 is the Tap's own ReadFrame and WriteFrame).
func (t *Tap) Queue(i int) virtionet.Queue {
	if i == 0 {
		return t
	}
	return t.queues[i-1]
}

// SetQueueEnabled attaches queue i (i >= 1) to the TAP or detaches it
// (TUNSETQUEUE): the kernel steers frames only to attached queues.
func (t *Tap) SetQueueEnabled(i int, on bool) error {
	if i < 1 || i > len(t.queues) {
		return fmt.Errorf("tap: %s has no queue %d to enable (queues 1..%d)", t.name, i, len(t.queues))
	}
	if err := t.queues[i-1].Control(func(fd int) error { return setQueue(fd, on) }); err != nil {
		return fmt.Errorf("tap: TUNSETQUEUE attach=%v on %s queue %d: %w", on, t.name, i, err)
	}
	return nil
}

// Close reverts what Open changed on an existing TAP and closes the
// descriptors; a TAP Open created disappears with them.
func (t *Tap) Close() error {
	t.closeOnce.Do(func() {
		err := t.rollback()
		for _, q := range t.queues {
			err = errors.Join(err, q.Close())
		}
		t.closeErr = errors.Join(err, t.FileBackend.Close())
		if t.nl != nil { // nil for an adopted descriptor (FromFile)
			t.nl.Close()
		}
		t.log.Info("tap: closed", "name", t.name, "created", t.created, "err", t.closeErr)
	})
	return t.closeErr
}
