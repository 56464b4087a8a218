package corral

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// bareMachine is a Machine with nothing created: what the lifecycle
// methods see of a machine New made, without KVM.
func bareMachine() *Machine {
	return &Machine{id: "test", done: make(chan struct{}), log: slog.New(slog.DiscardHandler)}
}

func TestWaitBeforeStartReturnsAtOnce(t *testing.T) {
	m := bareMachine()
	done := make(chan error, 1)
	go func() {
		_, err := m.Wait()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrNotStarted) {
			t.Errorf("Wait before Start = %v, want ErrNotStarted", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait before Start blocked")
	}
}

func TestClosedMachine(t *testing.T) {
	m := bareMachine()
	if err := m.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	select {
	case <-m.Done():
	default:
		t.Error("Done not closed after Close")
	}
	if err := m.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if _, err := m.Wait(); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Wait after Close = %v, want ErrNotStarted", err)
	}
	if err := m.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v, want ErrClosed", err)
	}
	m.Stop() // stopping a closed machine does nothing
}
