package corral

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/corral-vmm/corral/hostnet"
	"github.com/corral-vmm/corral/internal/netnstest"
	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// netVMEnv makes the test binary one machine of TestNetVMsAtOnce: its value
// is the machine's --net (auto, or bridge=NAME); netVMKernel names the
// kernel.
const (
	netVMEnv    = "CORRAL_TEST_NET_VM"
	netVMKernel = "CORRAL_TEST_NET_VM_KERNEL"
)

// TestNetVMChild is one machine process of TestNetVMsAtOnce: on the go
// line it creates a machine with one NIC, prints "subnet guest mac tap",
// and keeps the machine until stdin closes.
func TestNetVMChild(t *testing.T) {
	spec := os.Getenv(netVMEnv)
	if spec == "" {
		t.Skip("run by TestNetVMsAtOnce")
	}
	n, err := ParseNet(spec)
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	netnstest.AwaitGo()
	m, err := New(Config{Kernel: os.Getenv(netVMKernel), Nets: []Net{n}})
	if err != nil {
		fmt.Printf("error %v\n", err)
		os.Exit(1)
	}
	s := m.Networks()[0]
	fmt.Printf("%v %v %v %s\n", s.Host.Masked(), s.Guest, s.MAC, s.Tap)
	netnstest.Hold()
	if err := m.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// Twenty machines with --net auto created at once by twenty processes in
// one namespace all get different subnets; then two machines bridged onto
// one bridge at once get different MACs and addresses (issue: three
// duplicate /24s in 20, and every bridged VM on 02:63:72:00:00:02 and
// 10.200.0.2).
func TestNetVMsAtOnce(t *testing.T) {
	testenv.MustHaveKVM(t)
	k := guests.BuildT(t, "hello")
	state := t.TempDir()
	env := func(spec string) []string {
		return []string{netVMEnv + "=" + spec, netVMKernel + "=" + k, hostnet.StateDirEnv + "=" + state}
	}
	fields := func(i int, line string) []string {
		f := strings.Fields(line)
		if len(f) != 4 {
			t.Fatalf("machine %d: %q", i, line)
		}
		return f
	}
	netnstest.Run(t, func() {
		lines, release := netnstest.Together(t, 20, "TestNetVMChild", env("auto")...)
		subnets, taps := map[string]int{}, map[string]int{}
		for i, line := range lines {
			f := fields(i, line)
			if j, dup := subnets[f[0]]; dup {
				t.Errorf("machines %d and %d both got subnet %s", j, i, f[0])
			}
			if j, dup := taps[f[3]]; dup {
				t.Errorf("machines %d and %d both got TAP %s", j, i, f[3])
			}
			subnets[f[0]], taps[f[3]] = i, i
		}
		release()

		addBridge(t, "corralbr0", "10.66.0.1/24")
		lines, release = netnstest.Together(t, 2, "TestNetVMChild", env("bridge=corralbr0")...)
		defer release()
		a, b := fields(0, lines[0]), fields(1, lines[1])
		if a[1] == b[1] || a[2] == b[2] {
			t.Errorf("two bridged machines collide: guest %s MAC %s and guest %s MAC %s", a[1], a[2], b[1], b[2])
		}
		for _, f := range [][]string{a, b} {
			if f[0] != "10.66.0.0/24" {
				t.Errorf("bridged machine on subnet %s, want the bridge's 10.66.0.0/24", f[0])
			}
		}
	})
}
