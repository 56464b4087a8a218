package hostnet

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrNoBridge: the named bridge does not exist, or is not a bridge.
var ErrNoBridge = errors.New("hostnet: no such bridge")

// ErrLeaseTaken: the guest address or MAC asked for is already leased to
// another live VM on the bridge.
var ErrLeaseTaken = errors.New("hostnet: address or MAC already leased on the bridge")

// BridgeInfo is what a plan needs of an existing bridge.
type BridgeInfo struct {
	Name string
	MAC  net.HardwareAddr
	// Addr is the bridge's first IPv4 address with its prefix length, or
	// the zero Prefix when it has none.
	Addr netip.Prefix
}

// LookupBridge finds the bridge name in the calling thread's network
// namespace. A missing interface, or one that is not a bridge, is
// ErrNoBridge.
func LookupBridge(name string) (BridgeInfo, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return BridgeInfo{}, fmt.Errorf("%w: %s does not exist", ErrNoBridge, name)
		}
		return BridgeInfo{}, fmt.Errorf("hostnet: look up bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return BridgeInfo{}, fmt.Errorf("%w: %s is not a bridge (type %s)", ErrNoBridge, name, link.Type())
	}
	bi := BridgeInfo{Name: name, MAC: link.Attrs().HardwareAddr}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return BridgeInfo{}, fmt.Errorf("hostnet: addresses of bridge %s: %w", name, err)
	}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP)
		ones, _ := a.IPNet.Mask.Size()
		if ok {
			bi.Addr = netip.PrefixFrom(ip.Unmap(), ones)
			break
		}
	}
	return bi, nil
}

// Lease is a guest address and MAC held on a bridge by this process until
// Release, recorded in a registry file that every Corral process on the
// host consults (see LeaseOnBridge).
type Lease struct {
	Addr netip.Addr
	MAC  net.HardwareAddr

	dir, file, token string
}

// LeaseOnBridge reserves a guest address of subnet for mac on a bridge of
// the calling thread's network namespace. want, when valid, is the address
// to reserve; otherwise the lowest free host address of the subnet is
// taken, skipping the addresses in skip (the bridge's and the DHCP
// server's). An address or MAC that another live VM holds on the same
// bridge is refused (ErrLeaseTaken).
//
// The registry is one file per bridge and network namespace in dir
// (StateDir), changed under an exclusive lock; each entry names its
// process by PID and start time, and entries of processes that no longer
// run are dropped, so a crash leaks nothing for long. Machines on other
// hosts of the LAN are not known: give them other subnets or pools.
func LeaseOnBridge(dir, bridge string, subnet netip.Prefix, skip []netip.Addr, want netip.Addr, mac net.HardwareAddr) (*Lease, error) {
	if err := CheckMAC(mac); err != nil {
		return nil, err
	}
	subnet = subnet.Masked()
	if want.IsValid() {
		if err := checkMember(subnet, want, "guest address"); err != nil {
			return nil, err
		}
	}
	file, err := registryName(bridge)
	if err != nil {
		return nil, err
	}
	var tok [8]byte
	rand.Read(tok[:])
	l := &Lease{MAC: mac, dir: dir, file: file, token: hex.EncodeToString(tok[:])}
	err = updateRegistry(dir, file, func(es []leaseEntry) ([]leaseEntry, error) {
		taken := make(map[netip.Addr]bool, len(es)+len(skip))
		for _, s := range skip {
			taken[s] = true
		}
		for _, e := range es {
			if bytes.Equal(e.mac, mac) {
				return nil, fmt.Errorf("%w: MAC %v is leased to %v (pid %d) on %s", ErrLeaseTaken, mac, e.addr, e.pid, bridge)
			}
			taken[e.addr] = true
		}
		switch {
		case want.IsValid() && taken[want]:
			return nil, fmt.Errorf("%w: %v is in use on %s", ErrLeaseTaken, want, bridge)
		case want.IsValid():
			l.Addr = want
		default:
			bc := broadcast(subnet)
			for a := subnet.Addr().Next(); a.IsValid() && a != bc && subnet.Contains(a); a = a.Next() {
				if !taken[a] {
					l.Addr = a
					break
				}
			}
			if !l.Addr.IsValid() {
				return nil, fmt.Errorf("%w: every address of %v on %s is leased", ErrExhausted, subnet, bridge)
			}
		}
		me, err := self()
		if err != nil {
			return nil, err
		}
		me.addr, me.mac, me.token = l.Addr, mac, l.token
		return append(es, me), nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Release gives the lease back. It is idempotent.
func (l *Lease) Release() error {
	if l == nil || l.token == "" {
		return nil
	}
	tok := l.token
	l.token = ""
	return updateRegistry(l.dir, l.file, func(es []leaseEntry) ([]leaseEntry, error) {
		out := es[:0]
		for _, e := range es {
			if e.token != tok {
				out = append(out, e)
			}
		}
		return out, nil
	})
}

// leaseEntry is one registry line: "ADDR MAC PID START TOKEN".
type leaseEntry struct {
	addr  netip.Addr
	mac   net.HardwareAddr
	pid   int
	start uint64 // the process's start time in clock ticks since boot
	token string
}

// registryName is the bridge's registry file, per network namespace (a
// bridge name is only unique within one).
func registryName(bridge string) (string, error) {
	ns, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return "", fmt.Errorf("hostnet: network namespace: %w", err)
	}
	ns = strings.TrimSuffix(strings.TrimPrefix(ns, "net:["), "]")
	if strings.ContainsAny(bridge, "/\x00") || strings.ContainsAny(ns, "/\x00") {
		return "", fmt.Errorf("%w: bridge name %q", ErrPlan, bridge)
	}
	return "bridge-" + bridge + "-" + ns + ".leases", nil
}

// updateRegistry locks the registry, reads its live entries, lets change
// edit them, and writes the result back.
func updateRegistry(dir, file string, change func([]leaseEntry) ([]leaseEntry, error)) error {
	f, err := lockFile(dir, file)
	if err != nil {
		return err
	}
	defer f.Close()
	es, err := readEntries(f)
	if err != nil {
		return err
	}
	if es, err = change(es); err != nil {
		return err
	}
	var b bytes.Buffer
	for _, e := range es {
		fmt.Fprintf(&b, "%s %s %d %d %s\n", e.addr, e.mac, e.pid, e.start, e.token)
	}
	if err := f.Truncate(0); err != nil {
		return fmt.Errorf("hostnet: rewrite %s: %w", file, err)
	}
	if _, err := f.WriteAt(b.Bytes(), 0); err != nil {
		return fmt.Errorf("hostnet: rewrite %s: %w", file, err)
	}
	return nil
}

// readEntries parses the registry, dropping malformed lines and entries of
// processes that have ended.
func readEntries(f *os.File) ([]leaseEntry, error) {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("hostnet: read registry: %w", err)
	}
	var es []leaseEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		e, ok := parseEntry(sc.Text())
		if !ok {
			continue
		}
		if st, err := startTime(e.pid); err == nil && st == e.start {
			es = append(es, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("hostnet: read registry: %w", err)
	}
	return es, nil
}

func parseEntry(line string) (leaseEntry, bool) {
	fs := strings.Fields(line)
	if len(fs) != 5 {
		return leaseEntry{}, false
	}
	var e leaseEntry
	var err1, err2, err3, err4 error
	e.addr, err1 = netip.ParseAddr(fs[0])
	e.mac, err2 = net.ParseMAC(fs[1])
	e.pid, err3 = strconv.Atoi(fs[2])
	e.start, err4 = strconv.ParseUint(fs[3], 10, 64)
	e.token = fs[4]
	return e, errors.Join(err1, err2, err3, err4) == nil && e.pid > 0
}

// self is a registry entry naming the calling process.
func self() (leaseEntry, error) {
	pid := os.Getpid()
	st, err := startTime(pid)
	if err != nil {
		return leaseEntry{}, err
	}
	return leaseEntry{pid: pid, start: st}, nil
}

// startTime reads field 22 of /proc/PID/stat, which tells a process from a
// later one that reuses its PID.
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("hostnet: process %d: %w", pid, err)
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// after it start past the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("hostnet: /proc/%d/stat is malformed", pid)
	}
	fs := strings.Fields(string(b[i+1:]))
	const startField = 22 - 3 // fields after the name start at field 3
	if len(fs) <= startField {
		return 0, fmt.Errorf("hostnet: /proc/%d/stat is short", pid)
	}
	return strconv.ParseUint(fs[startField], 10, 64)
}
