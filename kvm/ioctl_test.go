package kvm

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// An interrupted KVM_CREATE_VM is repeated until it succeeds; other errors
// and an endless run of EINTR are returned.
func TestRetryEINTR(t *testing.T) {
	calls := 0
	r, err := retryEINTR(func() (uintptr, error) {
		calls++
		if calls < 3 {
			return 0, unix.EINTR
		}
		return 7, nil
	})
	if r != 7 || err != nil || calls != 3 {
		t.Fatalf("after two EINTRs: r=%d err=%v calls=%d, want 7, nil, 3", r, err, calls)
	}
	calls = 0
	_, err = retryEINTR(func() (uintptr, error) { calls++; return 0, unix.ENOMEM })
	if !errors.Is(err, unix.ENOMEM) || calls != 1 {
		t.Fatalf("ENOMEM: err=%v calls=%d, want ENOMEM after 1 call", err, calls)
	}
	calls = 0
	_, err = retryEINTR(func() (uintptr, error) { calls++; return 0, unix.EINTR })
	if !errors.Is(err, unix.EINTR) || calls != maxEINTR+1 {
		t.Fatalf("endless EINTR: err=%v calls=%d, want EINTR after %d calls", err, calls, maxEINTR+1)
	}
}
