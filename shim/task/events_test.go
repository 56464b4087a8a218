package task

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/runtime"
)

// gatedPublisher is a containerd that does not answer a Forward until
// the test opens the gate.
type gatedPublisher struct {
	gate chan struct{}
	mu   sync.Mutex
	sent []string
}

func (g *gatedPublisher) Publish(ctx context.Context, topic string, ev events.Event) error {
	<-g.gate
	g.mu.Lock()
	g.sent = append(g.sent, topic)
	g.mu.Unlock()
	return nil
}

func (g *gatedPublisher) topics() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.sent...)
}

// TestSlowPublisherHoldsNothingUp: Create, Start, Wait, Delete and
// Shutdown answer while containerd has not taken a single event (each
// Publish is a round trip to it), the events go in order once it does,
// and the shim's shutdown closes the publisher only after they are sent.
func TestSlowPublisherHoldsNothingUp(t *testing.T) {
	h := newHarness(t, testSpec)
	pub := &closeRecorder{gatedPublisher: gatedPublisher{gate: make(chan struct{})}}
	h.svc.cfg.Publisher = pub
	h.svc.events.pub = pub
	_, sd := shutdown.WithShutdown(context.Background())
	h.svc.cfg.Shutdown = sd.Shutdown
	h.svc.CloseOnShutdown(sd, pub)
	s, _, _, _ := h.fifos("init")
	calls := make(chan uint32, 1)
	go func() {
		h.create(s)
		h.start("")
		h.vm.proc(0).exit(3)
		st := h.wait("")
		if _, err := h.svc.Delete(context.Background(), &taskAPI.DeleteRequest{ID: "t1"}); err != nil {
			t.Errorf("Delete: %v", err)
		}
		if _, err := h.svc.Shutdown(context.Background(), &taskAPI.ShutdownRequest{ID: "t1"}); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		calls <- st
	}()
	select {
	case st := <-calls:
		if st != 3 {
			t.Errorf("Wait: status %d, want 3", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the task calls waited for containerd to take the events")
	}
	select {
	case <-sd.Done():
		t.Fatal("the shim ended with the events unsent")
	case <-time.After(100 * time.Millisecond):
	}
	close(pub.gate)
	select {
	case <-sd.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	want := []string{runtime.TaskCreateEventTopic, runtime.TaskStartEventTopic, runtime.TaskExitEventTopic, runtime.TaskDeleteEventTopic, "close"}
	if got := pub.topics(); !reflect.DeepEqual(got, want) {
		t.Errorf("publisher saw %v, want %v", got, want)
	}
}

// syncBuffer is a log sink for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *syncBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestEventsFlushedOnceAtShutdown: with a containerd that never takes an
// event, the Shutdown call answers at once and the shutdown waits for the
// events once (one flush timeout, one warning), then closes the publisher.
func TestEventsFlushedOnceAtShutdown(t *testing.T) {
	pub := &closeRecorder{gatedPublisher: gatedPublisher{gate: make(chan struct{})}}
	defer close(pub.gate)
	var logs syncBuffer
	svc := NewService(context.Background(), Config{Publisher: pub, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	const timeout = time.Second
	svc.flushTimeout = timeout
	_, sd := shutdown.WithShutdown(context.Background())
	svc.cfg.Shutdown = sd.Shutdown
	svc.CloseOnShutdown(sd, pub)
	svc.publish(runtime.TaskExitEventTopic, nil)
	begun := time.Now()
	if _, err := svc.Shutdown(context.Background(), &taskAPI.ShutdownRequest{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(begun); d >= timeout {
		t.Errorf("the Shutdown call took %v: it waited for the events itself", d)
	}
	select {
	case <-sd.Done():
	case <-time.After(10 * timeout):
		t.Fatal("shutdown did not finish")
	}
	if n := strings.Count(logs.String(), "events not sent"); n != 1 {
		t.Errorf("%d flushes timed out, want 1; log:\n%s", n, logs.String())
	}
	pub.mu.Lock()
	closed := pub.closed
	pub.mu.Unlock()
	if !closed {
		t.Error("publisher not closed")
	}
}

// TestFlushTimesOut: a containerd that never takes the events does not
// keep the shim up past the timeout.
func TestFlushTimesOut(t *testing.T) {
	pub := &gatedPublisher{gate: make(chan struct{})}
	defer close(pub.gate)
	q := &eventQueue{pub: pub, ctx: context.Background()}
	if !q.flush(time.Millisecond) {
		t.Error("flush of an empty queue timed out")
	}
	q.publish(runtime.TaskExitEventTopic, nil)
	if q.flush(20 * time.Millisecond) {
		t.Error("flush returned true with an event unsent")
	}
}

// closeRecorder is a publisher that records its Close after the events.
type closeRecorder struct {
	gatedPublisher
	closed bool
}

func (c *closeRecorder) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, "close")
	c.closed = true
	return nil
}

// TestShutdownClosesPublisher: the library's shutdown (here the real
// shutdown service) sends the queued events, then closes the publisher,
// which the library waits for before the shim exits.
func TestShutdownClosesPublisher(t *testing.T) {
	pub := &closeRecorder{gatedPublisher: gatedPublisher{gate: make(chan struct{})}}
	svc := NewService(context.Background(), Config{Publisher: pub})
	_, sd := shutdown.WithShutdown(context.Background())
	svc.CloseOnShutdown(sd, pub)
	svc.publish(runtime.TaskExitEventTopic, nil)
	sd.Shutdown()
	select {
	case <-sd.Done():
		t.Fatal("shut down with an event unsent")
	case <-time.After(50 * time.Millisecond):
	}
	close(pub.gate)
	select {
	case <-sd.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not finish")
	}
	if got, want := pub.topics(), []string{runtime.TaskExitEventTopic, "close"}; !reflect.DeepEqual(got, want) {
		t.Errorf("publisher saw %v, want %v", got, want)
	}
}
