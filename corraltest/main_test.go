package corraltest

import (
	"flag"
	"os"
	"strconv"
	"testing"
)

// minParallel is how many parallel tests this package's tests need at
// once: TestEightInParallel holds 8 machines up together.
const minParallel = 8

// TestMain raises -test.parallel to minParallel unless it was given: its
// default is GOMAXPROCS (1 in tests/tcgkvm), and the machines of parallel
// tests wait on their guests, not on a CPU.
func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if p := flag.Lookup("test.parallel"); p != nil && !given {
		if v, err := strconv.Atoi(p.Value.String()); err == nil && v < minParallel {
			p.Value.Set(strconv.Itoa(minParallel))
		}
	}
	os.Exit(m.Run())
}
