package corral

import (
	"strings"
	"testing"

	"github.com/corral-vmm/corral/control"
	"github.com/corral-vmm/corral/kvm"
	"github.com/corral-vmm/corral/virtio/vsock"
)

func TestExitCountersAndStructMetrics(t *testing.T) {
	var m Machine
	for range 3 {
		m.exits.add(kvm.ExitIO)
	}
	m.exits.add(kvm.ExitMMIO)
	m.exits.add(kvm.ExitReason(1000)) // beyond the table: counted in the last slot
	got := m.Exits()
	if got["KVM_EXIT_IO"] != 3 || got["KVM_EXIT_MMIO"] != 1 || len(got) != 3 {
		t.Errorf("Exits() = %v", got)
	}

	ms := structMetrics(nil, "vsock", map[string]string{"dev": "0"}, vsock.Counters{TxPackets: 7, Conns: 2}, map[string]bool{"Conns": true})
	var b strings.Builder
	if err := control.WriteMetrics(&b, ms); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"# TYPE corral_vsock_tx_packets_total counter\ncorral_vsock_tx_packets_total{dev=\"0\"} 7\n",
		"# TYPE corral_vsock_conns gauge\ncorral_vsock_conns{dev=\"0\"} 2\n",
		"corral_vsock_protocol_errors_total{dev=\"0\"} 0\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}
