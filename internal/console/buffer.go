// Package console holds guest console output for tests and tools that wait
// for what a guest prints ("console expect").
package console

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// Buffer is an io.Writer that keeps everything written to it, bounded, and
// lets readers wait for a string to appear. Safe for concurrent use.
type Buffer struct {
	mu      sync.Mutex
	buf     strings.Builder
	max     int
	dropped int
	changed chan struct{} // closed and replaced on every write
}

// DefaultMax is the most bytes a Buffer keeps unless told otherwise.
const DefaultMax = 4 << 20

// NewBuffer returns a Buffer keeping at most max bytes (DefaultMax if
// max <= 0); later output is counted and dropped.
func NewBuffer(max int) *Buffer {
	if max <= 0 {
		max = DefaultMax
	}
	return &Buffer{max: max, changed: make(chan struct{})}
}

// Write keeps p (up to the bound) and wakes waiters.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.max - b.buf.Len()
	keep := p
	if len(keep) > room {
		keep = keep[:max(room, 0)]
		b.dropped += len(p) - len(keep)
	}
	b.buf.Write(keep)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

// String returns everything kept so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// WaitFor blocks until the output contains s or ctx is done. On timeout the
// error quotes the tail of the output.
func (b *Buffer) WaitFor(ctx context.Context, s string) error {
	for {
		b.mu.Lock()
		found := strings.Contains(b.buf.String(), s)
		ch := b.changed
		out := b.buf.String()
		b.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ctx.Done():
			tail := out
			if len(tail) > 2000 {
				tail = "..." + tail[len(tail)-2000:]
			}
			return fmt.Errorf("console: %q not seen: %w; output so far:\n%s", s, context.Cause(ctx), tail)
		case <-ch:
		}
	}
}
