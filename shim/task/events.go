package task

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/containerd/events"
	"github.com/containerd/containerd/pkg/shutdown"
)

// FlushTimeout bounds how long the shim's shutdown waits for queued
// events to reach containerd before it closes the publisher: less than
// the 5 s the shim library then waits for that close, or it exits 1
// ("publisher not closed") with the events half sent.
const FlushTimeout = 4 * time.Second

// eventQueue sends events to a Publisher in order, off the caller's path:
// each Publish is a round trip to containerd (which handles the event
// before it answers), and a task call or the exit of a process should not
// wait for it, as runc's shim does not. One sender goroutine runs while
// events are pending.
type eventQueue struct {
	pub Publisher
	ctx context.Context
	log *slog.Logger

	mu      sync.Mutex
	pending []queuedEvent
	sending bool
	idle    chan struct{} // closed when pending empties; nil while idle
}

type queuedEvent struct {
	topic string
	ev    events.Event
}

// publish queues ev for topic.
func (q *eventQueue) publish(topic string, ev events.Event) {
	if q.pub == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = append(q.pending, queuedEvent{topic, ev})
	if q.idle == nil {
		q.idle = make(chan struct{})
	}
	if !q.sending {
		q.sending = true
		go q.send()
	}
}

func (q *eventQueue) send() {
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.sending = false
			close(q.idle)
			q.idle = nil
			q.mu.Unlock()
			return
		}
		e := q.pending[0]
		q.pending = q.pending[1:]
		q.mu.Unlock()
		if err := q.pub.Publish(q.ctx, e.topic, e.ev); err != nil {
			q.log.Warn("shim: publishing event", "topic", e.topic, "err", err)
		}
	}
}

// flush waits until the events queued so far are sent, or timeout; false
// when it timed out.
func (q *eventQueue) flush(timeout time.Duration) bool {
	q.mu.Lock()
	idle := q.idle
	q.mu.Unlock()
	if idle == nil {
		return true
	}
	select {
	case <-idle:
		return true
	case <-time.After(timeout):
		return false
	}
}

// CloseOnShutdown has sd's shutdown send the queued events (bounded by
// FlushTimeout) and then close pub: the one flush at shutdown, whether a
// Shutdown call or a signal ended the shim. The shim library waits up to 5 s for
// its publisher to be closed before the serving shim exits, and exits 1
// ("publisher not closed") if nobody did; runc's shim closes it the same
// way.
func (s *Service) CloseOnShutdown(sd shutdown.Service, pub io.Closer) {
	sd.RegisterCallback(func(context.Context) error {
		if !s.events.flush(s.flushTimeout) {
			s.cfg.Log.Warn("shim: events not sent before shutting down", "timeout", s.flushTimeout)
		}
		return pub.Close()
	})
}
