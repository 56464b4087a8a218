package corral

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/corral-vmm/corral/hostnet"
	"github.com/corral-vmm/corral/internal/netnstest"
	virtionet "github.com/corral-vmm/corral/virtio/virtionet"
	"github.com/corral-vmm/corral/virtio/virtionet/tap"
)

func TestParseNetQueues(t *testing.T) {
	n, err := ParseNet("auto,queues=4")
	if err != nil || n.Queues != 4 {
		t.Fatalf("ParseNet(auto,queues=4) = %+v, %v", n, err)
	}
	for _, bad := range []string{"queues=0", "queues=65", "queues=x", "queues=", "auto,queues"} {
		if _, err := ParseNet(bad); err == nil {
			t.Errorf("ParseNet(%q) accepted", bad)
		}
	}
	for cpus, want := range map[int]int{1: 1, 2: 2, 8: 8, 64: DefaultNetQueues} {
		if got := (&Net{}).queues(cpus); got != want {
			t.Errorf("%d vCPUs: %d queue pairs, want %d", cpus, got, want)
		}
	}
	if got := (&Net{Queues: 3}).queues(1); got != 3 {
		t.Errorf("queues=3 on 1 vCPU: %d", got)
	}
	vm, peer := socketPairFiles(t)
	defer vm.Close()
	defer peer.Close()
	for _, c := range []struct {
		n    Net
		want string
	}{
		{Net{Queues: virtionet.MaxQueuePairs + 1}, "65 queue pairs"},
		{Net{Queues: -1}, "-1 queue pairs"},
		{Net{File: vm, Queues: 2}, "brings its own queues"},
	} {
		if err := c.n.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("validate(%+v): %v, want %q", c.n, err, c.want)
		}
	}
}

// A NIC gets one queue pair per vCPU: a multi-queue TAP and a device that
// offers MQ, on a bridge (whose lease wrapper must keep the queues) too;
// one vCPU gives the one-pair device. An existing single-queue TAP gets
// one pair by default and refuses queues=2.
func TestNetNICQueuePairs(t *testing.T) {
	t.Setenv(hostnet.StateDirEnv, t.TempDir())
	netnstest.Run(t, func() {
		addBridge(t, "br0", "10.66.0.1/24")
		sq := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: "usersq"}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_ONE_QUEUE}
		if err := netlink.LinkAdd(sq); err != nil {
			t.Fatal(err)
		}
		for _, f := range sq.Fds {
			f.Close()
		}
		for _, c := range []struct {
			cpus int
			net  Net
			want int
		}{
			{2, Net{}, 2},
			{1, Net{}, 1},
			{1, Net{Queues: 3}, 3},
			{2, Net{Bridge: "br0"}, 2},
			{2, Net{Tap: "usersq"}, 1},
		} {
			m := nicMachine("0123456789abcdef")
			m.cfg.CPUs = c.cpus
			n, err := m.openNIC(0, c.net)
			if err != nil {
				t.Fatalf("%d vCPUs, %+v: %v", c.cpus, c.net, err)
			}
			offered, _ := n.dev.QueuePairs()
			mq := n.dev.Features()&virtionet.FMQ != 0
			n.dev.Close()
			if offered != c.want || mq != (c.want > 1) {
				t.Errorf("%d vCPUs, %+v: %d pairs, MQ %v; want %d", c.cpus, c.net, offered, mq, c.want)
			}
		}
		m := nicMachine("0123456789abcdef")
		if _, err := m.openNIC(0, Net{Tap: "usersq", Queues: 2}); !errors.Is(err, tap.ErrSingleQueue) {
			t.Fatalf("queues=2 on a single-queue TAP: %v", err)
		}
	})
}

// A snapshot's NIC restores with the queue pairs it offered, whatever the
// restorer's Net says; one saved before multiqueue (no queue_pairs) with one.
func TestSnapshotNetQueuePairs(t *testing.T) {
	var sm savedMachine
	if err := json.Unmarshal([]byte(`{"nets":[{"kind":"tap","mac":"02:00:00:00:00:01","queue_pairs":2},{"kind":"tap","mac":"02:00:00:00:00:02"}]}`), &sm); err != nil {
		t.Fatal(err)
	}
	c, err := sm.config(RestoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Nets) != 2 || c.Nets[0].Queues != 2 || c.Nets[1].Queues != 1 {
		t.Fatalf("restored nets %+v; want 2 and 1 queue pairs", c.Nets)
	}
	c, err = sm.config(RestoreConfig{Nets: []Net{{Tap: "t0", Queues: 5}, {Tap: "t1"}}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Nets[0].Queues != 2 || c.Nets[1].Queues != 1 || c.Nets[0].Tap != "t0" {
		t.Fatalf("restored nets with RestoreConfig.Nets %+v", c.Nets)
	}
}
