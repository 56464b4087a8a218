package virtio9p

import (
	"testing"

	"github.com/corral-vmm/corral/internal/benchconfine"
)

// TestMain lets bench/device-confined.sh run this package's benchmarks
// under the VMM's confinement (CORRAL_BENCH_CONFINE=on); otherwise it only
// runs the tests.
func TestMain(m *testing.M) { benchconfine.Main(m) }
