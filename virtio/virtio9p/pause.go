package virtio9p

import (
	"encoding/binary"
	"fmt"
	"time"
)

// DefaultPauseWait bounds how long Pause waits for the requests in flight
// to be answered: a Tread of a pipe or a Tlock may wait on the host for
// ever, and a snapshot should fail rather than hang.
const DefaultPauseWait = 10 * time.Second

// fidOp is what a request's successful reply does to the guest's fids.
type fidOp uint8

const (
	fidNone fidOp = iota
	fidAdd        // on success the fid is in the table (new or replaced)
	fidDel        // the fid leaves the table whatever the reply
)

// fidOpOf returns what a T-message of type typ, whose first bytes are
// head, does to the fid table, as the p9 server does it: Tattach installs
// fid, Twalk, Twalkgetattr and Txattrwalk install newfid (on success), Tclunk
// and Tremove drop fid (even when they fail). A message too short to hold
// its fid fails to decode in the server and changes nothing.
func fidOpOf(typ byte, head []byte) (fidOp, uint32) {
	le := binary.LittleEndian
	switch typ {
	case tTattach:
		if len(head) >= attachFid+4 {
			return fidAdd, le.Uint32(head[attachFid:])
		}
	case tTwalk, tTwalkgetattr, tTxattrwalk:
		if len(head) >= walkNewFid+4 {
			return fidAdd, le.Uint32(head[walkNewFid:])
		}
	case tTclunk, tTremove:
		if len(head) >= clunkFid+4 {
			return fidDel, le.Uint32(head[clunkFid:])
		}
	}
	return fidNone, 0
}

// trackFid applies the reply of type rtyp to slot s's request to c.fids.
// The server changes its table before it replies, so the table and
// c.fids agree once every reply is in, unless the guest races a walk to
// a fid with a clunk of it (its own confusion; the server has the
// last word). Called with c.mu held.
func (c *conn) trackFid(s *slot, rtyp byte) {
	switch s.fidOp {
	case fidAdd:
		if rtyp == s.typ+1 { // the R-message of the request: success
			c.fids[s.fid] = struct{}{}
			if s.typ == tTattach {
				c.attached = true
			}
		}
	case fidDel:
		delete(c.fids, s.fid)
	}
	s.fidOp = fidNone
}

// session reports what the guest holds of the 9P session: its fids, and
// whether a Tversion succeeded with no Tattach after it (a mount under
// way: the guest's next message relies on the negotiated session).
func (c *conn) session() (fids int, versionedOnly bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fids), c.versioned && !c.attached
}

// pause stops taking chains and waits, at most wait, until every request
// taken is answered and its chain pushed to the used ring: then no server
// goroutine touches guest memory or the queue until resume. The server,
// its session and its fids stay; kicks meanwhile wake next, which takes
// nothing, and resume wakes it again.
func (c *conn) pause(wait time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.paused = true
	busy := func() int { return len(c.slots) - len(c.free) }
	if busy() == 0 {
		c.flushIRQ() // the interrupts of the replies pushed: before a snapshot
		return nil
	}
	expired := false
	t := time.AfterFunc(wait, func() {
		c.mu.Lock()
		expired = true
		c.freed.Broadcast()
		c.mu.Unlock()
	})
	defer t.Stop()
	for busy() > 0 && !c.closed {
		if expired {
			return fmt.Errorf("virtio-9p: share %q: pause: %d requests still in flight after %v (a read of a pipe, or a lock, waiting on the host?)",
				c.d.tag, busy(), wait)
		}
		c.freed.Wait()
	}
	c.flushIRQ()
	return nil
}

// resume lets next take chains again and wakes it for the kicks it saw
// while paused.
func (c *conn) resume() {
	c.mu.Lock()
	c.paused = false
	c.mu.Unlock()
	c.wake()
}

// Pause stops taking requests once those in flight are answered (every
// chain taken is in the used ring), keeping the 9P session and the
// guest's fids: a resumed guest's mount works on. Kicks meanwhile are
// served after Resume. A no-op on an inactive or paused device. It fails
// after Config.PauseWait with requests still unanswered; the device stays
// paused (takes nothing new) and Resume undoes it.
func (d *Device) Pause() error {
	return d.common.Pause(func() error {
		if c := d.active.Load(); c != nil {
			return c.pause(d.pauseWait)
		}
		return nil
	})
}

// Resume takes requests again, first those the guest queued meanwhile;
// a device activated paused (Activation.Paused) starts here.
func (d *Device) Resume() error {
	return d.common.Resume(func() error {
		if c := d.active.Load(); c != nil {
			c.resume()
		}
		return nil
	})
}
