package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// Lease table state, for snapshots (SaveState/RestoreState). All integers
// little-endian. Times are relative to the server's clock when the state
// was saved, since a restored server's clock starts elsewhere: each
// record's remaining hold and its age carry over, as if no time passed
// while the snapshot lay on disk (the guest's clock does not move either).
//
//	header:  magic "CDHL" | version u16 | records u32
//	record:  state u8 | flags u8 | key length u16 | ip u32 | owner [6]byte |
//	         remaining i64 ns | age i64 ns | key
const (
	stMagic      = 0 // [4]byte "CDHL"
	stVersion    = 4 // u16
	stCount      = 6 // u32 records
	stHeaderSize = 10

	recState     = 0  // u8 leaseState (offered, bound, released, declined)
	recFlags     = 1  // u8 recInfinite
	recKeyLen    = 2  // u16
	recIP        = 4  // u32
	recOwner     = 8  // [6]byte
	recRemaining = 14 // i64 ns until expiry (0 for released records)
	recAge       = 22 // i64 ns since last use, >= 0
	recFixedSize = 30 // the key follows

	recInfinite = 1 // the hold never ends (remaining unused)

	// maxStateSpan bounds ages and past expiries (146 years), so that
	// arithmetic on them and the clock cannot overflow.
	maxStateSpan = time.Duration(1 << 62)

	// StateVersion is the lease state format SaveState writes and
	// RestoreState reads.
	StateVersion = 1
)

var stateMagic = [4]byte{'C', 'D', 'H', 'L'}

// ErrState is matched by every error RestoreState returns.
var ErrState = errors.New("dhcp: bad lease state")

// SaveState returns the lease table (dynamic leases, offers, released and
// declined records) in a versioned encoding for RestoreState. Rate limiter
// and counters are not saved.
func (s *Server) SaveState() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	t := s.table
	b := make([]byte, stHeaderSize, stHeaderSize+t.used()*(recFixedSize+8))
	le := binary.LittleEndian
	copy(b[stMagic:], stateMagic[:])
	le.PutUint16(b[stVersion:], StateVersion)
	le.PutUint32(b[stCount:], uint32(t.used()))
	for i := range t.slots {
		l := &t.slots[i]
		if l.state == stateFree {
			continue
		}
		var r [recFixedSize]byte
		r[recState] = byte(l.state)
		switch {
		case l.state == stateReleased:
		case l.expiry == maxDuration:
			r[recFlags] = recInfinite
		default:
			le.PutUint64(r[recRemaining:], uint64(l.expiry-now))
		}
		le.PutUint16(r[recKeyLen:], uint16(len(l.key)))
		le.PutUint32(r[recIP:], l.ip)
		copy(r[recOwner:], l.owner[:])
		le.PutUint64(r[recAge:], uint64(max(now-l.touched, 0)))
		b = append(append(b, r[:]...), l.key...)
	}
	return b, nil
}

// RestoreState replaces the lease table with one SaveState wrote. The
// records must fit this server's configuration (addresses in its pool
// and not excluded, the table size, the per-MAC cap); on any error the
// table is left as it was. Errors match ErrState and name the record and
// field at fault.
func (s *Server) RestoreState(data []byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrState, fmt.Sprintf(format, args...))
	}
	le := binary.LittleEndian
	if len(data) < stHeaderSize {
		return bad("%d bytes, shorter than the %d-byte header", len(data), stHeaderSize)
	}
	if [4]byte(data[stMagic:]) != stateMagic {
		return bad("magic %q is not %q", data[stMagic:stMagic+4], stateMagic[:])
	}
	if v := le.Uint16(data[stVersion:]); v != StateVersion {
		return bad("version %d (this server reads %d)", v, StateVersion)
	}
	n := le.Uint32(data[stCount:])

	s.mu.Lock()
	defer s.mu.Unlock()
	if uint64(n) > uint64(s.cfg.maxLeases) {
		return bad("%d records for a table of %d", n, s.cfg.maxLeases)
	}
	now := s.now()
	t := newLeaseTable(s.cfg)
	rest := data[stHeaderSize:]
	for i := range n {
		if len(rest) < recFixedSize {
			return bad("record %d: truncated (%d bytes left)", i, len(rest))
		}
		r := rest[:recFixedSize]
		keyLen := int(le.Uint16(r[recKeyLen:]))
		if len(rest)-recFixedSize < keyLen {
			return bad("record %d: key of %d bytes with %d left", i, keyLen, len(rest)-recFixedSize)
		}
		key := string(rest[recFixedSize : recFixedSize+keyLen])
		rest = rest[recFixedSize+keyLen:]

		st := leaseState(r[recState])
		flags := r[recFlags]
		ip := le.Uint32(r[recIP:])
		var owner [ethAddrLen]byte
		copy(owner[:], r[recOwner:])
		remaining := time.Duration(le.Uint64(r[recRemaining:]))
		age := time.Duration(le.Uint64(r[recAge:]))
		switch {
		case st != stateOffered && st != stateBound && st != stateReleased && st != stateDeclined:
			return bad("record %d: state %d", i, st)
		case flags&^recInfinite != 0:
			return bad("record %d: flags %#x", i, flags)
		case st == stateReleased && (flags != 0 || remaining != 0):
			return bad("record %d: a released record with an expiry", i)
		case age < 0 || age > maxStateSpan:
			return bad("record %d: age %d ns", i, int64(age))
		case remaining < -maxStateSpan || remaining > InfiniteLease:
			return bad("record %d: remaining hold %d ns", i, int64(remaining))
		}
		if err := checkKey(key, st); err != nil {
			return bad("record %d: %v", i, err)
		}
		p, ok := t.poolIndex(ip)
		switch {
		case !ok:
			return bad("record %d: address %v outside the pool %v-%v", i, addr4(ip), addr4(s.cfg.poolFirst), addr4(s.cfg.poolLast))
		case t.byIP[p] == addrExcluded:
			return bad("record %d: address %v is not handed out", i, addr4(ip))
		case t.byIP[p] != addrFree:
			return bad("record %d: address %v already has record %d", i, addr4(ip), t.byIP[p])
		}
		if key != "" {
			if _, dup := t.byKey[key]; dup {
				return bad("record %d: client %s has two records", i, keyString(key))
			}
		}
		if t.perOwner[owner] >= t.maxPerOwner {
			return bad("record %d: owner %v has more than %d records", i, net.HardwareAddr(owner[:]), t.maxPerOwner)
		}
		var expiry time.Duration // released records have none
		switch {
		case st == stateReleased:
		case flags&recInfinite != 0:
			expiry = maxDuration
		case remaining >= 0:
			expiry = addSat(now, remaining)
		default:
			expiry = now + remaining // past: both within ±2^62
		}
		j := t.freeSlots[len(t.freeSlots)-1]
		t.freeSlots = t.freeSlots[:len(t.freeSlots)-1]
		t.slots[j] = lease{key: key, ip: ip, owner: owner, state: st, expiry: expiry, touched: now - age}
		if key != "" {
			t.byKey[key] = j
		}
		t.byIP[p] = j
		t.freeAddrs--
		t.perOwner[owner]++
	}
	if len(rest) != 0 {
		return bad("%d bytes after the last record", len(rest))
	}
	if err := t.check(); err != nil {
		return bad("%v", err) // cannot happen: each record was checked
	}
	s.table = t
	return nil
}

// checkKey checks a client key as clientKey makes them: "" only for a
// declined (quarantine) record, else 'C' and a client identifier of
// 1..maxClientIDLen bytes, or 'H', a hardware type and 0..16 address bytes.
func checkKey(key string, st leaseState) error {
	if st == stateDeclined {
		if key != "" {
			return fmt.Errorf("a declined record with a client key")
		}
		return nil
	}
	switch {
	case key == "":
		return fmt.Errorf("no client key")
	case key[0] == 'C' && len(key) >= 2 && len(key) <= 1+maxClientIDLen:
	case key[0] == 'H' && len(key) >= 2 && len(key) <= 2+16: // htype, chaddr[:hlen]
	default:
		return fmt.Errorf("client key of %d bytes starting %q", len(key), key[0])
	}
	return nil
}
