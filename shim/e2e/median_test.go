package e2e

import (
	"os"
	"slices"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestEvents(t *testing.T) {
	log := t.TempDir() + "/log"
	lines := `time="2026-12-06T11:39:24.504873645Z" level=debug msg="event published" ns=corraltest topic=/containers/create type=containerd.events.ContainerCreate
time="2026-12-06T11:39:25.000000000Z" level=debug msg="event published" ns=other topic=/tasks/create type=x
time="2026-12-06T11:39:26.004873645Z" level=debug msg="event published" ns=corraltest topic=/tasks/exit type=containerd.events.TaskExit
time="2026-12-06T11:39:20.004873645Z" level=debug msg="event published" ns=corraltest topic=/old type=x
time="2026-12-06T11:39:27.004873645Z" level=debug msg="event published" ns=corraltest topic=/next-run type=x
`
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	since, _ := time.Parse(time.RFC3339Nano, "2026-12-06T11:39:24.004873645Z")
	got := events(t, log, "corraltest", since, since.Add(2500*time.Millisecond))
	want := []event{{500 * time.Millisecond, "/containers/create"}, {2 * time.Second, "/tasks/exit"}}
	if !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
}

func TestShimSteps(t *testing.T) {
	log := t.TempDir() + "/log"
	lines := `time=2026-12-06T11:39:24.100Z level=DEBUG msg="shim: create: VM started" step=468ms total=497ms
time=2026-12-06T11:39:24.200Z level=DEBUG msg="warm: restored" step=95ms total=105ms
time=2026-12-06T11:39:24.300Z level=INFO msg="guest console line"
time=2026-12-06T11:39:23.000Z level=DEBUG msg="shim: create: VM started" step=1ms total=1ms
time=2026-12-06T11:39:26.000Z level=DEBUG msg="agentvm: close: released" step=83ms total=110ms
`
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	since, _ := time.Parse(time.RFC3339Nano, "2026-12-06T11:39:24.000Z")
	got := shimSteps(t, log, since, since.Add(time.Second))
	want := []string{`+100 ms msg="shim: create: VM started" step=468ms total=497ms`, `+200 ms msg="warm: restored" step=95ms total=105ms`}
	if !slices.Equal(got, want) {
		t.Fatalf("shimSteps = %q, want %q", got, want)
	}
}
