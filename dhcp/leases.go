package dhcp

import (
	"fmt"
	"time"
)

// leaseState is where a lease record is in its life.
type leaseState uint8

const (
	stateFree     leaseState = iota // slot unused
	stateOffered                    // address offered, held until expiry
	stateBound                      // address leased until expiry
	stateReleased                   // client released it; the record remembers the address
	stateDeclined                   // address quarantined until expiry; the record has no key
)

// lease is one record of the lease table. A used record always owns its
// address in byIP; whether it still holds it against others is live().
type lease struct {
	key     string // client identity (see clientKey); "" for quarantine records
	ip      uint32
	owner   [ethAddrLen]byte // Ethernet source that created the record
	state   leaseState
	expiry  time.Duration // offered, bound, declined: when the hold ends
	touched time.Duration // last use, for least-recently-used eviction
}

// live reports whether the record still holds its address against others.
func (l *lease) live(now time.Duration) bool {
	switch l.state {
	case stateOffered, stateBound, stateDeclined:
		return now < l.expiry
	}
	return false
}

// byIP sentinels.
const (
	addrFree     = -1 // no record owns the address
	addrExcluded = -2 // never handed out (server, router, reserved, ...)
)

// leaseTable is the bounded set of dynamic leases. Its size never exceeds the
// number of slots fixed at creation; per-owner caps stop one source from
// filling it.
type leaseTable struct {
	poolFirst   uint32
	slots       []lease
	freeSlots   []int32
	byKey       map[string]int32
	byIP        []int32 // pool offset → slot, addrFree or addrExcluded
	perOwner    map[[ethAddrLen]byte]int
	maxPerOwner int
	cursor      int
	freeAddrs   int // entries of byIP equal to addrFree
	evictions   uint64
}

func newLeaseTable(s *settings) *leaseTable {
	size := int(s.poolLast - s.poolFirst + 1)
	t := &leaseTable{
		poolFirst:   s.poolFirst,
		slots:       make([]lease, s.maxLeases),
		freeSlots:   make([]int32, 0, s.maxLeases),
		byKey:       make(map[string]int32, s.maxLeases),
		byIP:        make([]int32, size),
		perOwner:    make(map[[ethAddrLen]byte]int),
		maxPerOwner: s.maxPerMAC,
	}
	for i := s.maxLeases - 1; i >= 0; i-- {
		t.freeSlots = append(t.freeSlots, int32(i))
	}
	for i := range t.byIP {
		ip := s.poolFirst + uint32(i)
		if ip == s.serverIP || ip == s.router || s.reservedIPs[ip] || ip == s.network || ip == s.bcast {
			t.byIP[i] = addrExcluded
			continue
		}
		t.byIP[i] = addrFree
		t.freeAddrs++
	}
	return t
}

// used returns the number of records in the table.
func (t *leaseTable) used() int { return len(t.slots) - len(t.freeSlots) }

// poolIndex returns ip's offset in the pool.
func (t *leaseTable) poolIndex(ip uint32) (int, bool) {
	off := uint64(ip) - uint64(t.poolFirst)
	if ip < t.poolFirst || off >= uint64(len(t.byIP)) {
		return 0, false
	}
	return int(off), true
}

// lookup returns the slot of the record for key, or -1.
func (t *leaseTable) lookup(key []byte) int32 {
	if i, ok := t.byKey[string(key)]; ok {
		return i
	}
	return -1
}

// evict removes record i, freeing its slot and address.
func (t *leaseTable) evict(i int32) {
	l := &t.slots[i]
	if l.state == stateFree {
		return
	}
	if l.key != "" {
		delete(t.byKey, l.key)
	}
	if p, ok := t.poolIndex(l.ip); ok && t.byIP[p] == i {
		t.byIP[p] = addrFree
		t.freeAddrs++
	}
	if n := t.perOwner[l.owner]; n <= 1 {
		delete(t.perOwner, l.owner)
	} else {
		t.perOwner[l.owner] = n - 1
	}
	*l = lease{}
	t.freeSlots = append(t.freeSlots, i)
	t.evictions++
}

// oldest returns the least recently touched used record matching keep, or -1.
func (t *leaseTable) oldest(keep func(*lease) bool) int32 {
	best := int32(-1)
	for i := range t.slots {
		l := &t.slots[i]
		if l.state == stateFree || !keep(l) {
			continue
		}
		if best < 0 || l.touched < t.slots[best].touched {
			best = int32(i)
		}
	}
	return best
}

// addressAvailable reports whether pool offset p can be given to a new
// record: nobody owns it, or its record no longer holds it.
func (t *leaseTable) addressAvailable(p int, now time.Duration) bool {
	switch i := t.byIP[p]; {
	case i == addrFree:
		return true
	case i >= 0:
		return !t.slots[i].live(now)
	}
	return false
}

// takeAddress frees pool offset p (evicting a stale owner) for a new record.
func (t *leaseTable) takeAddress(p int) {
	if i := t.byIP[p]; i >= 0 {
		t.evict(i)
	}
}

// pickAddress finds an address for a new record: prefer if available, else a
// never-used address, else one whose record went stale, else the oldest
// pending offer. It evicts what it takes over.
func (t *leaseTable) pickAddress(prefer uint32, now time.Duration) (uint32, bool) {
	if p, ok := t.poolIndex(prefer); ok && t.addressAvailable(p, now) {
		t.takeAddress(p)
		return prefer, true
	}
	if t.freeAddrs > 0 {
		n := len(t.byIP)
		for k := 0; k < n; k++ {
			p := (t.cursor + k) % n
			if t.byIP[p] == addrFree {
				t.cursor = (p + 1) % n
				return t.poolFirst + uint32(p), true
			}
		}
	}
	victim := t.oldest(func(l *lease) bool { return !l.live(now) })
	if victim < 0 {
		// Offers nobody requested yet are cheap to take back: a flood of
		// DISCOVERs must not starve clients that go on to REQUEST.
		victim = t.oldest(func(l *lease) bool { return l.state == stateOffered })
	}
	if victim < 0 {
		return 0, false
	}
	ip := t.slots[victim].ip
	t.evict(victim)
	return ip, true
}

// create makes a record for key with address ip, which must be available. It
// enforces the owner's cap and the table size; the verdict is non-none when
// no record could be made.
func (t *leaseTable) create(key []byte, owner [ethAddrLen]byte, ip uint32, state leaseState, expiry, now time.Duration) (int32, Verdict) {
	p, ok := t.poolIndex(ip)
	if !ok || !t.addressAvailable(p, now) {
		return -1, DropPoolExhausted
	}
	t.takeAddress(p)
	if t.perOwner[owner] >= t.maxPerOwner {
		if v := t.oldest(func(l *lease) bool { return l.owner == owner }); v >= 0 {
			t.evict(v)
		}
	}
	if len(t.freeSlots) == 0 {
		v := t.oldest(func(l *lease) bool { return !l.live(now) })
		if v < 0 {
			v = t.oldest(func(l *lease) bool { return l.state == stateOffered })
		}
		if v < 0 {
			return -1, DropTableFull
		}
		t.evict(v)
	}
	i := t.freeSlots[len(t.freeSlots)-1]
	t.freeSlots = t.freeSlots[:len(t.freeSlots)-1]
	t.slots[i] = lease{key: string(key), ip: ip, owner: owner, state: state, expiry: expiry, touched: now}
	t.byKey[t.slots[i].key] = i
	t.byIP[p] = i
	t.freeAddrs--
	t.perOwner[owner]++
	return i, verdictNone
}

// quarantine turns record i into a keyless record holding its address until
// until; the client's next DISCOVER makes a new record.
func (t *leaseTable) quarantine(i int32, until, now time.Duration) {
	l := &t.slots[i]
	if l.key != "" {
		delete(t.byKey, l.key)
		l.key = ""
	}
	l.state = stateDeclined
	l.expiry = until
	l.touched = now
}

// check verifies the table's internal consistency (for tests and fuzzing).
func (t *leaseTable) check() error {
	if t.used() > len(t.slots) || t.used() < 0 {
		return fmt.Errorf("used %d of %d slots", t.used(), len(t.slots))
	}
	owners := map[[ethAddrLen]byte]int{}
	keys, free := 0, 0
	for i := range t.slots {
		l := &t.slots[i]
		if l.state == stateFree {
			continue
		}
		owners[l.owner]++
		if l.key != "" {
			keys++
			if t.byKey[l.key] != int32(i) {
				return fmt.Errorf("slot %d key not indexed", i)
			}
		}
		p, ok := t.poolIndex(l.ip)
		if !ok || t.byIP[p] != int32(i) {
			return fmt.Errorf("slot %d address %#x not indexed", i, l.ip)
		}
	}
	if keys != len(t.byKey) {
		return fmt.Errorf("%d keyed records, %d keys indexed", keys, len(t.byKey))
	}
	for o, n := range owners {
		if t.perOwner[o] != n {
			return fmt.Errorf("owner %x has %d records, counted %d", o, n, t.perOwner[o])
		}
		if n > t.maxPerOwner {
			return fmt.Errorf("owner %x has %d records, cap %d", o, n, t.maxPerOwner)
		}
	}
	if len(owners) != len(t.perOwner) {
		return fmt.Errorf("%d owners, %d counted", len(owners), len(t.perOwner))
	}
	for _, v := range t.byIP {
		if v == addrFree {
			free++
		}
	}
	if free != t.freeAddrs {
		return fmt.Errorf("%d free addresses, counted %d", free, t.freeAddrs)
	}
	return nil
}
