package agentvm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio/vsock"
)

// TestWaitAgentOneRetryLoop: waitAgent on a VM wired as a machine's
// (newAgentVM) retries a refused dial in its own loop alone: the backoff
// grows and never starts over (a retry loop nested in it restarted at
// minBackoff each time its window ran out), and the wait ends at the
// deadline the caller gave.
func TestWaitAgentOneRetryLoop(t *testing.T) {
	var mu sync.Mutex
	var dials []time.Time
	refuse := func(ctx context.Context) (net.Conn, error) {
		mu.Lock()
		dials = append(dials, time.Now())
		mu.Unlock()
		return nil, fmt.Errorf("vsock: dial guest port 1024: %w", vsock.ErrRefused)
	}
	done := make(chan struct{})
	vm := newAgentVM(refuse, done, func() error { return nil }, newConsoleRing(nil, ConsoleLines), nil)
	timeout := refusedWindow + 500*time.Millisecond
	t0 := time.Now()
	err := vm.waitAgent(context.Background(), timeout, exitPowerOff)
	waited := time.Since(t0)
	var ae *AgentError
	if !errors.As(err, &ae) || ae.Reason != ReasonTimeout || !errors.Is(ae.LastErr, vsock.ErrRefused) {
		t.Fatalf("err = %v, want a timeout whose last try was refused", err)
	}
	if waited > timeout+500*time.Millisecond {
		t.Errorf("waited %v for a deadline of %v", waited, timeout)
	}
	mu.Lock()
	defer mu.Unlock()
	grown := false
	deadline := t0.Add(timeout)
	for i := 1; i < len(dials); i++ {
		if !dials[i].Before(deadline) {
			// The try made as the deadline ended the last backoff:
			// its gap is whatever was left of that backoff (short when
			// a loaded host's slower turns moved the dials later).
			continue
		}
		gap := dials[i].Sub(dials[i-1])
		if gap >= maxBackoff/2 {
			grown = true
		} else if grown {
			t.Fatalf("dial %d came %v after the one before, once the backoff had reached %v: the retries started over (%d dials in %v)", i, gap, maxBackoff, len(dials), waited)
		}
	}
	if !grown {
		t.Errorf("%d dials in %v: the backoff never reached %v", len(dials), waited, maxBackoff)
	}
}

// TestDialRetriesRefused: sessions' dials (Dial, hence commands and the
// power-off) still get a refusal retried.
func TestDialRetriesRefused(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	calls := 0
	vm := newAgentVM(func(context.Context) (net.Conn, error) {
		if calls++; calls <= 2 {
			return nil, vsock.ErrRefused
		}
		return a, nil
	}, make(chan struct{}), func() error { return nil }, newConsoleRing(nil, ConsoleLines), nil)
	if c, err := vm.Dial(context.Background()); c != a || err != nil || calls != 3 {
		t.Errorf("Dial after two refusals: %v, %v after %d calls; want the connection on the third", c, err, calls)
	}
}
