package client

import (
	"fmt"
	"io"
	"reflect"

	"github.com/corral-vmm/corral/agent/proto"
)

// The output path: readLoop queues each Data frame's bytes, within its
// stream's credit, on the queue of the writer the stream goes to; one
// writeOut goroutine per writer drains that queue in arrival order and
// returns each stream's credit once the writer has taken its bytes.
// Stdout and Stderr that are one writer share one queue, so it gets their
// bytes in the order the agent sent them (as through os/exec's one pipe)
// and one Write at a time; different writers never hold each other back.

// outStream is one output stream's flow-control state.
type outStream struct {
	stream proto.Stream
	q      *outQueue // nil for a terminal's stderr: it has no output
	owed   uint64    // credit granted and not used yet
	closed bool      // the agent sent Close
	queued int       // bytes of this stream in q
	maxBuf int       // most bytes queued at once
}

// outQueue holds the bytes on their way to one writer, in arrival order.
type outQueue struct {
	w        io.Writer
	name     string // for errors: "stdout", "stderr" or "stdout and stderr"
	buf      []byte
	spans    []span // which stream each stretch of buf came from
	open     int    // streams feeding the queue not closed yet
	writeErr error
}

// span is a stretch of an outQueue's bytes from one stream. Consecutive
// frames of a stream share one, so a span costs at most 8 bytes per Data
// frame held, the size of the frame's header on the wire.
type span struct {
	n   uint32
	out uint8 // index in Cmd.outs
}

// outIndex is the index in Cmd.outs of an output stream.
func outIndex(s proto.Stream) uint8 {
	if s == proto.StreamStderr {
		return 1
	}
	return 0
}

// openOutputs sets up stdout and stderr with win bytes of credit each and
// returns the queues to drain: one per writer.
func (c *Cmd) openOutputs(win uint32) []*outQueue {
	var qs []*outQueue
	for i, w := range []io.Writer{c.Stdout, c.Stderr} {
		o := &outStream{stream: [2]proto.Stream{proto.StreamStdout, proto.StreamStderr}[i], owed: uint64(win)}
		c.outs[i] = o
		switch {
		case i == 1 && c.TTY:
			o.closed = true // a terminal has one output
			continue
		case i == 1 && sameWriter(c.Stdout, c.Stderr):
			o.q = c.outs[0].q
			o.q.name = "stdout and stderr"
		default:
			if w == nil {
				w = io.Discard
			}
			o.q = &outQueue{w: w, name: o.stream.String()}
			qs = append(qs, o.q)
		}
		o.q.open++
	}
	return qs
}

// deliver queues a Data frame for its writer, or marks the stream's end.
func (c *Cmd) deliver(f proto.Frame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := outIndex(f.Stream)
	o := c.outs[i]
	if o.closed {
		return fmt.Errorf("client: agent sent %s on %s after closing it: %w", f.Type, o.stream, proto.ErrProtocol)
	}
	c.cond.Broadcast()
	if f.Type == proto.TypeClose {
		o.closed = true
		o.q.open--
		return nil
	}
	n := len(f.Payload)
	if uint64(n) > o.owed {
		return fmt.Errorf("client: agent sent %d bytes on %s with %d bytes of credit: %w", n, o.stream, o.owed, proto.ErrProtocol)
	}
	if n == 0 {
		return nil
	}
	o.owed -= uint64(n)
	o.queued += n
	o.maxBuf = max(o.maxBuf, o.queued)
	q := o.q
	q.buf = append(q.buf, f.Payload...)
	if k := len(q.spans) - 1; k >= 0 && q.spans[k].out == i {
		q.spans[k].n += uint32(n)
	} else {
		q.spans = append(q.spans, span{n: uint32(n), out: i})
	}
	return nil
}

// take moves the oldest bytes, up to len(chunk), into chunk and returns
// how many of them each stream gave.
func (q *outQueue) take(chunk []byte) (n int, per [2]int) {
	for len(q.spans) > 0 && n < len(chunk) {
		r := &q.spans[0]
		m := min(int(r.n), len(chunk)-n)
		per[r.out] += m
		n += m
		if r.n -= uint32(m); r.n == 0 {
			q.spans = q.spans[1:]
		}
	}
	copy(chunk, q.buf[:n])
	q.buf = q.buf[n:]
	return n, per
}

// writeOut passes one queue's bytes to its writer and returns each
// stream's credit once the writer has taken its bytes.
func (c *Cmd) writeOut(q *outQueue) {
	defer c.writers.Done()
	chunk := make([]byte, proto.MaxData)
	for {
		c.mu.Lock()
		for len(q.buf) == 0 && q.open > 0 && !c.finished && c.fail == nil {
			c.cond.Wait()
		}
		if len(q.buf) == 0 || (c.fail != nil && c.exit == nil) {
			// Drained after the end, or the session failed: what is left
			// has no one to go to.
			c.mu.Unlock()
			return
		}
		n, per := q.take(chunk)
		for i, m := range per {
			c.outs[i].queued -= m
		}
		c.mu.Unlock()
		if q.writeErr == nil {
			if _, err := q.w.Write(chunk[:n]); err != nil {
				q.writeErr = fmt.Errorf("client: writing %s of %s: %w", q.name, c.Path, err)
			}
		}
		c.mu.Lock()
		for i, m := range per {
			c.outs[i].owed += uint64(m)
		}
		c.mu.Unlock()
		// A failed writer still returns credit, so the command is not
		// held forever; its output is dropped and Wait reports the error.
		for i, m := range per {
			if m > 0 {
				c.w.Send(proto.TypeCredit, c.outs[i].stream, proto.AppendU32(nil, uint32(m)))
			}
		}
	}
}

// sameWriter reports whether a and b are one writer, as os/exec decides
// it: equal, with a comparable dynamic type.
func sameWriter(a, b io.Writer) bool {
	if a == nil || b == nil || !reflect.TypeOf(a).Comparable() || reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	return a == b
}
