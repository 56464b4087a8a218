package corral

import (
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/kvm"
	"github.com/corral-vmm/corral/virtio/blk"
	"github.com/corral-vmm/corral/virtio/virtio9p"
)

// maxCountedExit bounds the KVM exit reasons counted one by one; higher
// ones (none exist today) count as the last.
const maxCountedExit = 63

// exitCounters counts vCPU exits by KVM exit reason.
type exitCounters [maxCountedExit + 1]atomic.Uint64

func (c *exitCounters) add(r kvm.ExitReason) {
	c[min(uint32(r), maxCountedExit)].Add(1)
}

// Exits returns how many times the vCPUs left the guest, by KVM exit
// reason ("KVM_EXIT_IO", ...); reasons not seen are left out.
func (m *Machine) Exits() map[string]uint64 {
	out := map[string]uint64{}
	for i := range m.exits {
		if n := m.exits[i].Load(); n > 0 {
			out[kvm.ExitReason(i).String()] = n
		}
	}
	return out
}

// Metrics returns the machine's counters as Prometheus metric families:
// vCPU exits by reason, the console's bytes, each virtio device's counters
// (blk, net, vsock, 9p) and each NIC's DHCP server's. Valid at any time,
// also after the machine ended.
func (m *Machine) Metrics() []control.Metric {
	var ms []control.Metric
	exits := control.Metric{Name: "corral_vcpu_exits_total", Help: "vCPU exits to the VMM by KVM exit reason", Type: control.Counter}
	for r, n := range m.Exits() {
		exits.Samples = append(exits.Samples, control.Sample{Labels: map[string]string{"reason": strings.ToLower(strings.TrimPrefix(r, "KVM_EXIT_"))}, Value: float64(n)})
	}
	sortSamples(exits.Samples, "reason")
	ms = append(ms, exits)
	un := m.UnclaimedAccesses()
	ms = append(ms, control.Metric{Name: "corral_unclaimed_accesses_total", Help: "guest accesses to ports and MMIO no device claimed", Type: control.Counter,
		Samples: []control.Sample{{Value: float64(un.Total())}}})
	ms = structMetrics(ms, "console", nil, m.ConsoleStats(), nil)
	var disk, share int
	for _, d := range m.plat.devs {
		switch d := d.(type) {
		case *blk.Device:
			ms = structMetrics(ms, "blk", map[string]string{"disk": strconv.Itoa(disk)}, d.Counters(), nil)
			disk++
		case *virtio9p.Device:
			ms = structMetrics(ms, "9p", map[string]string{"share": strconv.Itoa(share)}, d.Counters(), nil)
			share++
		}
	}
	for i, n := range m.Networks() {
		l := map[string]string{"nic": strconv.Itoa(i)}
		ms = structMetrics(ms, "net", l, n.NIC, nil)
		if n.DHCP != nil {
			for name, v := range n.DHCP.Map() {
				ms = append(ms, control.Metric{Name: "corral_dhcp_" + name + "_total", Type: control.Counter,
					Samples: []control.Sample{{Labels: l, Value: float64(v)}}})
			}
		}
	}
	if v := m.plat.vsock; v != nil {
		ms = structMetrics(ms, "vsock", nil, v.Counters(), map[string]bool{"Conns": true})
	}
	return ms
}

// structMetrics appends one family per uint64 field of counters:
// corral_<dev>_<field>_total, or corral_<dev>_<field> for gauges.
func structMetrics(ms []control.Metric, dev string, labels map[string]string, counters any, gauges map[string]bool) []control.Metric {
	v := reflect.ValueOf(counters)
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() != reflect.Uint64 || !f.IsExported() {
			continue
		}
		m := control.Metric{Name: "corral_" + dev + "_" + control.SnakeCase(f.Name), Type: control.Counter}
		if gauges[f.Name] {
			m.Type = control.Gauge
		} else {
			m.Name += "_total"
		}
		m.Samples = []control.Sample{{Labels: labels, Value: float64(v.Field(i).Uint())}}
		ms = append(ms, m)
	}
	return ms
}

func sortSamples(s []control.Sample, label string) {
	slices.SortFunc(s, func(a, b control.Sample) int { return strings.Compare(a.Labels[label], b.Labels[label]) })
}
