package agentvm

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/corral-vmm/corral/virtio/vsock"
)

// A refused dial is tried again within the window; other errors, and
// refusals past the window, come back at once.
func TestRetryRefused(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	calls := 0
	refuseTwice := func(context.Context) (net.Conn, error) {
		calls++
		if calls <= 2 {
			return nil, vsock.ErrRefused
		}
		return a, nil
	}
	c, err := retryRefused(refuseTwice, time.Second)(context.Background())
	if err != nil || c != a || calls != 3 {
		t.Errorf("after two refusals: conn %v, err %v, %d calls; want the connection on the third", c, err, calls)
	}

	other := errors.New("no vsock device")
	calls = 0
	_, err = retryRefused(func(context.Context) (net.Conn, error) { calls++; return nil, other }, time.Second)(context.Background())
	if !errors.Is(err, other) || calls != 1 {
		t.Errorf("another error: %v after %d calls; want it after one", err, calls)
	}

	calls = 0
	t0 := time.Now()
	_, err = retryRefused(func(context.Context) (net.Conn, error) { calls++; return nil, vsock.ErrRefused }, 50*time.Millisecond)(context.Background())
	if !errors.Is(err, vsock.ErrRefused) || calls < 2 || time.Since(t0) > 2*time.Second {
		t.Errorf("refused throughout: %v after %d calls in %v", err, calls, time.Since(t0))
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	_, err = retryRefused(func(context.Context) (net.Conn, error) { calls++; return nil, vsock.ErrRefused }, time.Minute)(ctx)
	if !errors.Is(err, vsock.ErrRefused) || calls != 1 {
		t.Errorf("cancelled context: %v after %d calls; want the refusal after one", err, calls)
	}
}
