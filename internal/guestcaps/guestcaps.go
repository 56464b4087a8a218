// Package guestcaps lists, in one place, the cap on every table and
// buffer a guest can make the VMM grow, with the reason for each value.
// docs/caps.md is rendered from List and a test keeps the two equal, so
// the page cannot drift from the constants.
package guestcaps

import (
	"fmt"
	"strings"

	"github.com/corral-vmm/corral/dhcp"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/queue"
	"github.com/corral-vmm/corral/virtio/virtio9p"
	"github.com/corral-vmm/corral/virtio/virtio9p/hostfs"
	"github.com/corral-vmm/corral/virtio/virtionet"
	"github.com/corral-vmm/corral/virtio/virtiopci"
	"github.com/corral-vmm/corral/virtio/vsock"
)

// Cap is one bound on guest-driven growth.
type Cap struct {
	Device string // the device or server that holds the table
	What   string // what is bounded
	Const  string // the Go constant that sets it
	Value  int64
	Unit   string // "" for a count
	Why    string
}

// List returns every cap, by device.
func List() []Cap {
	return []Cap{
		{"vsock", "connections per device", "vsock.DefaultMaxConns", vsock.DefaultMaxConns, "",
			"each holds two DefaultBufSize buffers: 256 x 2 x 256 KiB = 128 MiB at most; further REQUESTs are refused (counted as TableFull)"},
		{"vsock", "receive buffer per connection", "vsock.DefaultBufSize", vsock.DefaultBufSize, "bytes",
			"Linux's own VIRTIO_VSOCK_DEFAULT_BUF_SIZE; the credit the guest is granted, so it cannot queue more"},
		{"vsock", "pending host connections per listener", "vsock.DefaultBacklog", vsock.DefaultBacklog, "",
			"accepted guest connections a Listener holds before further REQUESTs are refused"},
		{"vsock", "payload per packet", "vsock.MaxPayload", vsock.MaxPayload, "bytes",
			"larger packets are refused as a guest error rather than buffered"},
		{"virtio-9p", "open host files (fids holding a descriptor)", "hostfs.DefaultMaxFiles", hostfs.DefaultMaxFiles, "",
			"walked fids, each holding one or two host descriptors: well under the RLIMIT_NOFILE hard limit, so the VMM keeps descriptors of its own"},
		{"virtio-9p", "requests in flight per device", "virtio9p.DefaultMaxInFlight", virtio9p.DefaultMaxInFlight, "",
			"bounds goroutines and message buffers a guest can pin (Config may raise it to MaxInFlight)"},
		{"virtio-9p", "requests in flight, ceiling", "virtio9p.MaxInFlight", virtio9p.MaxInFlight, "",
			"the most any configuration may allow"},
		{"virtio-9p", "message size", "virtio9p.DefaultMaxMessageSize", virtio9p.DefaultMaxMessageSize, "bytes",
			"1 MiB of data per read or write plus headers; with MaxInFlight it bounds buffer memory"},
		{"virtio-9p", "path components per walk", "hostfs.MaxWalk", hostfs.MaxWalk, "",
			"the 9P2000.L maximum (MAXWELEM)"},
		{"DHCP", "leases per server", "dhcp.DefaultMaxLeases", dhcp.DefaultMaxLeases, "",
			"the lease table is allocated at this size (or the pool's, if smaller) and never grows, whatever client IDs a guest invents"},
		{"DHCP", "leases per MAC", "dhcp.DefaultMaxLeasesPerMAC", dhcp.DefaultMaxLeasesPerMAC, "",
			"one guest NIC rotating client IDs cannot exhaust the pool"},
		{"DHCP", "address pool", "dhcp.MaxPoolSize", dhcp.MaxPoolSize, "addresses", "a /16 at most"},
		{"virtqueues", "queue size", "queue.MaxSize", queue.MaxSize, "entries", "the virtio 1.x maximum"},
		{"virtqueues", "indirect descriptors per chain", "queue.DefaultMaxIndirect", queue.DefaultMaxIndirect, "",
			"a chain longer than this is a guest error, so one request cannot make the device walk unbounded tables"},
		{"virtio-pci", "queues per device", "virtiopci.MaxQueues", virtiopci.MaxQueues, "", "what the MSI-X table has vectors for"},
		{"virtio-blk", "queues per disk", "blk.MaxQueues", blk.MaxQueues, "", "one worker goroutine each"},
		{"virtio-net", "frame length", "virtionet.MaxFrameLen", virtionet.MaxFrameLen, "bytes",
			"a 64 KiB TSO frame plus Ethernet and VLAN headers; longer chains are dropped and counted"},
	}
}

// Markdown renders List as docs/caps.md.
func Markdown() string {
	var b strings.Builder
	b.WriteString("# Caps on guest-driven resources\n\n")
	b.WriteString("Every table or buffer a guest can make the VMM grow has a cap; this page lists\n")
	b.WriteString("them with the reason for each value. It is generated from\n")
	b.WriteString("internal/guestcaps (`go test ./internal/guestcaps -update`), and a test fails\n")
	b.WriteString("when a constant changes without it. See docs/security.md.\n\n")
	b.WriteString("| Device | Bounded | Cap | Constant | Why |\n|---|---|---|---|---|\n")
	for _, c := range List() {
		v := fmt.Sprint(c.Value)
		if c.Unit != "" {
			v += " " + c.Unit
		}
		fmt.Fprintf(&b, "| %s | %s | %s | `%s` | %s |\n", c.Device, c.What, v, c.Const, c.Why)
	}
	return b.String()
}
