package corral

import (
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/corral-vmm/corral/internal/guestlog"
)

// UnclaimedAccesses counts guest accesses that no device claimed: reads
// return all ones and writes are dropped, as on a PC bus with nothing there.
// Guests probe absent hardware this way, so the counts are data, not errors.
type UnclaimedAccesses struct {
	PortReads, PortWrites uint64 // I/O port accesses (IN/OUT)
	MMIOReads, MMIOWrites uint64 // accesses to unbacked guest-physical addresses
}

// Total is the sum of all kinds.
func (u UnclaimedAccesses) Total() uint64 {
	return u.PortReads + u.PortWrites + u.MMIOReads + u.MMIOWrites
}

// unclaimedKind is one kind of unclaimed access.
type unclaimedKind int

const (
	unclaimedPortRead unclaimedKind = iota
	unclaimedPortWrite
	unclaimedMMIORead
	unclaimedMMIOWrite
	numUnclaimedKinds
)

// message is the kind's log message. guestlog rate-limits per message, so
// each kind logs its first access and then at most one a second.
func (k unclaimedKind) message() string {
	switch k {
	case unclaimedPortRead:
		return "guest read an unclaimed I/O port"
	case unclaimedPortWrite:
		return "guest wrote an unclaimed I/O port"
	case unclaimedMMIORead:
		return "guest read unclaimed MMIO"
	case unclaimedMMIOWrite:
		return "guest wrote unclaimed MMIO"
	}
	return fmt.Sprintf("unclaimed access of kind %d", int(k))
}

// unclaimedCounter counts unclaimed accesses per kind; vCPU threads update
// it concurrently without a lock.
type unclaimedCounter [numUnclaimedKinds]atomic.Uint64

// snapshot returns the counts so far.
func (u *unclaimedCounter) snapshot() UnclaimedAccesses {
	return UnclaimedAccesses{
		PortReads: u[unclaimedPortRead].Load(), PortWrites: u[unclaimedPortWrite].Load(),
		MMIOReads: u[unclaimedMMIORead].Load(), MMIOWrites: u[unclaimedMMIOWrite].Load(),
	}
}

// unclaimedAccess counts a guest access no device claimed and logs it at
// debug level, rate-limited; with debug off nothing is formatted.
func (m *Machine) unclaimedAccess(k unclaimedKind, addr uint64, size int) {
	n := m.unclaimed[k].Add(1)
	if !m.glog.Enabled(slog.LevelDebug) {
		return
	}
	m.glog.Debug(k.message(), "addr", guestlog.Hex(addr), "size", size, "count", n)
}

// UnclaimedAccesses returns how many guest accesses no device claimed so
// far, by kind.
func (m *Machine) UnclaimedAccesses() UnclaimedAccesses { return m.unclaimed.snapshot() }
