package tap

import (
	"net/netip"
	"testing"

	"github.com/corral-vmm/corral/hostnet"
)

// testTapName is the TAP the device tests and benchmarks create.
const testTapName = "corral7"

// testPlan is the network the device tests put on testTapName:
// 10.200.7.0/24, host .1, guest .2.
func testPlan(tb testing.TB) hostnet.Plan {
	tb.Helper()
	g, h := hostnet.MACs("tap-test", 7)
	p, err := hostnet.NewPlan(netip.MustParsePrefix("10.200.7.1/24"), netip.Addr{}, g, h)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}
