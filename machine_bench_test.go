package corral

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/internal/testenv"
	"github.com/corral-vmm/corral/tests/guests"
)

// firstByte records when the first console byte arrives.
type firstByte struct {
	once sync.Once
	at   chan time.Time
}

func (f *firstByte) Write(p []byte) (int, error) {
	if len(p) > 0 {
		f.once.Do(func() { f.at <- time.Now() })
	}
	return len(p), nil
}

// BenchmarkBootToFirstOutput measures, per machine, the time from New to the
// guest's first serial byte and to its debug-exit, for the hello test guest
// with 64 MiB of RAM (the figure bench/boot-latency.sh compares with QEMU).
func BenchmarkBootToFirstOutput(b *testing.B) {
	testenv.MustHaveKVM(b)
	k := guests.BuildT(b, "hello")
	var first, total time.Duration
	for i := 0; i < b.N; i++ {
		fb := &firstByte{at: make(chan time.Time, 1)}
		t0 := time.Now()
		m, err := New(Config{Kernel: k, Memory: 64 << 20, Console: fb})
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		e, _ := m.Wait() // an ExitError fails the Reason check below
		total += time.Since(t0)
		if e.Reason != ExitDebug {
			b.Fatalf("machine ended with %v", e)
		}
		select {
		case at := <-fb.at:
			first += at.Sub(t0)
		default:
			b.Fatal("no console output")
		}
	}
	b.ReportMetric(float64(first.Microseconds())/float64(b.N), "µs-to-first-output")
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs-to-exit")
}
