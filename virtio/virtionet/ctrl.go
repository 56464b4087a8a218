package virtionet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	stdnet "net"
	"slices"

	"github.com/corral-vmm/corral/virtio"
	"github.com/corral-vmm/corral/virtio/queue"
)

// ControlState is what the driver set through the control queue. The
// device records the receive modes, MAC filter tables and VLAN filter but
// does not filter: the TAP (or socket) delivers what the host sends it, and
// the guest's own stack drops what it does not want, as Linux does for
// frames a NIC passed up. The MAC and the guest offloads are applied.
type ControlState struct {
	Promisc  bool // VIRTIO_NET_CTRL_RX_PROMISC (on until the driver says otherwise)
	AllMulti bool // VIRTIO_NET_CTRL_RX_ALLMULTI
	// Unicast and Multicast are the MAC filter tables (at most MACTableMax
	// entries each); the overflow flags say the driver gave more.
	Unicast, Multicast                 []stdnet.HardwareAddr
	UnicastOverflow, MulticastOverflow bool
	// VLANs are the VLAN IDs the driver added to the filter, ascending.
	VLANs []uint16
	// GuestOffloads are the receive offload feature bits in force
	// (VIRTIO_NET_F_GUEST_*): those negotiated, or those the driver set
	// with VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET.
	GuestOffloads uint64
	// Pairs is the number of queue pairs in use: 1, or what the driver set
	// with VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET.
	Pairs int
}

// ctrlState is the device's record of the control commands. Device.mu
// guards it.
type ctrlState struct {
	promisc, allMulti  bool
	uni, multi         [][6]byte
	uniOver, multiOver bool
	vlans              [ctrlVLANs / 64]uint64
	guestOff           uint64
	mac                [6]byte // the MAC in force (MAC_ADDR_SET changes it)
	pairs              uint16  // queue pairs in use: 1, or what VQ_PAIRS_SET gave
}

// defaultCtrl is the state a fresh activation starts in: every frame
// accepted, the negotiated offloads, the configured MAC.
func defaultCtrl(features uint64, mac [6]byte) ctrlState {
	return ctrlState{promisc: true, guestOff: features & ctrlGuestOffloadBits, mac: mac, pairs: 1}
}

// Control returns what the driver set through the control queue.
func (d *Device) Control() ControlState {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &d.ctrl
	s := ControlState{Promisc: c.promisc, AllMulti: c.allMulti, UnicastOverflow: c.uniOver,
		MulticastOverflow: c.multiOver, GuestOffloads: c.guestOff, Pairs: int(c.pairs)}
	for _, m := range c.uni {
		s.Unicast = append(s.Unicast, stdnet.HardwareAddr(slices.Clone(m[:])))
	}
	for _, m := range c.multi {
		s.Multicast = append(s.Multicast, stdnet.HardwareAddr(slices.Clone(m[:])))
	}
	for v := range ctrlVLANs {
		if c.vlans[v/64]&(1<<(v%64)) != 0 {
			s.VLANs = append(s.VLANs, uint16(v))
		}
	}
	return s
}

// controller serves the control queue on its own goroutine: commands are
// rare (interface configuration), so a slow one (TUNSETOFFLOAD) never holds
// up frames.
type controller struct {
	d    *Device
	q    *queue.Queue
	irq  virtio.Interrupt
	fail func(error)
	kick chan struct{}
	qidx int  // the control queue's index, for interrupts
	act  *run // its pairs' receivers are told of guest offload changes; VQ_PAIRS_SET starts and stops pairs

	features uint64 // negotiated
	chain    queue.Chain
	buf      []byte // one command, copied out of guest memory
}

// newController serves q as the control queue of r (Activate sets qidx
// when MQ puts it after several pairs).
func newController(d *Device, q *queue.Queue, a virtio.Activation, r *run) *controller {
	return &controller{d: d, q: q, irq: a.Interrupt, fail: a.Fail, qidx: CtrlQueue, act: r, features: a.Features,
		kick: make(chan struct{}, 1), buf: make([]byte, ctrlMaxCmd)}
}

// run serves commands until ctx ends or the guest breaks the protocol.
func (c *controller) run(ctx context.Context) {
	for {
		if err := c.drain(ctx); err != nil {
			if errors.Is(err, queue.ErrGuest) {
				c.d.counts.inc(cProtocolErrors)
				c.d.glog.Warn("virtio-net: guest broke the control queue protocol; queue stopped", "err", err)
			} else {
				c.d.glog.Error("virtio-net: control queue failed", "err", err)
			}
			if c.fail != nil {
				c.fail(err)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
	}
}

// drain answers every available command, then re-arms notifications.
func (c *controller) drain(ctx context.Context) error {
	for {
		if err := c.q.DisableNotifications(); err != nil {
			return err
		}
		for ctx.Err() == nil {
			ok, err := c.q.Pop(&c.chain)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			if c.chain.WritableLen() == 0 {
				err := queue.Guestf(queue.BadRequest, "a control command with no device-writable byte for the ack (%d readable bytes)", c.chain.ReadableLen())
				c.q.Fail(err)
				return err
			}
			ack := [1]byte{ctrlAckOK}
			if !c.command() {
				ack[0] = ctrlAckErr
				c.d.counts.inc(cCtrlErrors)
			} else {
				c.d.counts.inc(cCtrlCommands)
			}
			if _, err := c.chain.WriteAt(ack[:], 0); err != nil {
				return err // cannot happen: a writable byte was checked
			}
			if err := c.q.Push(&c.chain, 1); err != nil {
				return err
			}
		}
		need, err := c.q.NeedInterrupt()
		if err != nil {
			return err
		}
		if need {
			if err := c.irq.Signal(c.qidx); err != nil {
				c.d.glog.Error("virtio-net: control interrupt failed", "err", err)
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		more, err := c.q.EnableNotifications()
		if err != nil || !more {
			return err
		}
	}
}

// command copies the chain's command out of guest memory once and carries
// it out. It returns false for VIRTIO_NET_ERR: a command that is short,
// long, unknown, of a class not negotiated, or not possible.
func (c *controller) command() bool {
	n := c.chain.ReadableLen()
	if n < ctrlHdrLen || n > ctrlMaxCmd {
		return false
	}
	cmd := c.buf[:n]
	if _, err := c.chain.ReadAt(cmd, 0); err != nil {
		return false // cannot happen: n bytes are readable
	}
	return c.apply(cmd[0], cmd[1], cmd[ctrlHdrLen:])
}

// apply carries out one command on the device's state.
func (c *controller) apply(class, command byte, data []byte) bool {
	has := func(f uint64) bool { return c.features&f != 0 }
	d := c.d
	switch {
	case class == ctrlClassRx && has(FCtrlRx):
		if len(data) != 1 || data[0] > 1 || command > ctrlRxAllMulti {
			return false
		}
		d.mu.Lock()
		if command == ctrlRxPromisc {
			d.ctrl.promisc = data[0] == 1
		} else {
			d.ctrl.allMulti = data[0] == 1
		}
		d.mu.Unlock()
		return true
	case class == ctrlClassMAC && command == ctrlMACTableSet && has(FCtrlRx):
		uni, uniOver, rest, ok := macTable(data)
		if !ok {
			return false
		}
		multi, multiOver, rest, ok := macTable(rest)
		if !ok || len(rest) != 0 {
			return false
		}
		d.mu.Lock()
		d.ctrl.uni, d.ctrl.uniOver = uni, uniOver
		d.ctrl.multi, d.ctrl.multiOver = multi, multiOver
		d.mu.Unlock()
		return true
	case class == ctrlClassMAC && command == ctrlMACAddrSet && has(FCtrlMACAddr):
		if len(data) != ctrlMACEntryLen || data[0]&1 != 0 || [6]byte(data) == ([6]byte{}) {
			return false
		}
		d.mu.Lock()
		d.ctrl.mac = [6]byte(data)
		copy(d.config[cfgMAC:], data)
		d.mu.Unlock()
		return true
	case class == ctrlClassVLAN && has(FCtrlVLAN):
		if len(data) != 2 || command > ctrlVLANDel {
			return false
		}
		vid := binary.LittleEndian.Uint16(data)
		if vid >= ctrlVLANs {
			return false
		}
		d.mu.Lock()
		if command == ctrlVLANAdd {
			d.ctrl.vlans[vid/64] |= 1 << (vid % 64)
		} else {
			d.ctrl.vlans[vid/64] &^= 1 << (vid % 64)
		}
		d.mu.Unlock()
		return true
	case class == ctrlClassGuestOffl && command == ctrlGuestOfflSet && has(FCtrlGuestOffloads):
		if len(data) != 8 {
			return false
		}
		return c.setGuestOffloads(binary.LittleEndian.Uint64(data))
	case class == ctrlClassMQ && command == ctrlMQVQPairsSet && has(FMQ):
		if len(data) != 2 {
			return false
		}
		n := binary.LittleEndian.Uint16(data)
		if n < 1 || int(n) > len(d.queues) {
			return false
		}
		return c.setPairs(n)
	}
	return false
}

// setPairs applies VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET: the first n pairs are
// served from now on, those beyond stopped before the ack is written (so
// no frame is placed in their receive queues afterwards), and their
// backend queues turned off. A backend that refuses gets VIRTIO_NET_ERR
// and the old count back.
func (c *controller) setPairs(n uint16) bool {
	d := c.d
	d.mu.Lock()
	old := d.ctrl.pairs
	d.ctrl.pairs = n
	d.mu.Unlock()
	if c.act == nil {
		return true
	}
	err := c.act.reconcile()
	if err == nil {
		return true
	}
	d.glog.Error("virtio-net: control: queue pairs refused by the backend", "pairs", n, "err", err)
	d.mu.Lock()
	d.ctrl.pairs = old
	d.mu.Unlock()
	if err := c.act.reconcile(); err != nil {
		d.glog.Error("virtio-net: control: queue pairs not restored", "pairs", old, "err", err)
	}
	return false
}

// macTable decodes one struct virtio_net_ctrl_mac from the front of b,
// keeping at most MACTableMax entries.
func macTable(b []byte) (macs [][6]byte, overflow bool, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, false, nil, false
	}
	n := uint64(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if n*ctrlMACEntryLen > uint64(len(b)) {
		return nil, false, nil, false
	}
	for i := range min(n, MACTableMax) {
		macs = append(macs, [6]byte(b[i*ctrlMACEntryLen:]))
	}
	return macs, n > MACTableMax, b[n*ctrlMACEntryLen:], true
}

// setGuestOffloads applies VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET: bits must be
// among the receive offloads negotiated. While the backend is told, the
// receive path accepts only what both the old and the new set allow, so no
// frame reaches the guest with an offload it turned off.
func (c *controller) setGuestOffloads(bits uint64) bool {
	if bits&^(c.features&ctrlGuestOffloadBits) != 0 {
		return false
	}
	d := c.d
	d.mu.Lock()
	defer d.mu.Unlock()
	old, now := guestOffload(d.ctrl.guestOff), guestOffload(bits)
	c.setRx(old & now)
	if d.be.VnetHdr() {
		if err := d.be.SetOffload(now); err != nil {
			c.setRx(old)
			d.glog.Error("virtio-net: control: guest offloads refused by the backend", "err", fmt.Errorf("set backend offloads %#x: %w", now, err))
			return false
		}
	}
	c.setRx(now)
	d.ctrl.guestOff = bits
	return true
}

func (c *controller) setRx(o Offload) {
	if c.act == nil {
		return
	}
	for _, p := range c.act.pairs {
		if p.rx != nil {
			p.rx.guestOff.Store(uint32(o))
		}
	}
}
