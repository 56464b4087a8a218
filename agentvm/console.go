package agentvm

import (
	"bytes"
	"io"
	"strings"
	"sync"
)

// Console ring bounds.
const (
	// ConsoleLines is how many of the guest console's last lines a VM keeps.
	ConsoleLines = 64
	// maxLine bounds one kept line; the rest of a longer line is dropped.
	maxLine = 512
)

// Console lines that end the wait for the agent at once.
const (
	panicMarker = "Kernel panic - not syncing"
	// agentErrorMarker opens the lines the agent prints on the console when
	// its setup fails (the contract of issue 11).
	agentErrorMarker = "corral-agent: error: "
)

// consoleRing keeps the last lines of the guest's console and passes every
// byte on to the user's writer. It notes a kernel panic and the agent's
// error lines for the wait in Start.
type consoleRing struct {
	next io.Writer // the user's console; nil for none

	mu       sync.Mutex
	lines    []string // ring of complete lines
	start    int      // index of the oldest line in lines
	partial  []byte   // the line being written
	cut      bool     // partial is truncated: drop to the end of the line
	panicked chan struct{}
	agentErr []string // the agent's error lines, in order (a few)
}

func newConsoleRing(next io.Writer, n int) *consoleRing {
	return &consoleRing{next: next, lines: make([]string, 0, n), panicked: make(chan struct{})}
}

// Write keeps p's lines, then writes p to the next writer; its error is
// the next writer's.
func (r *consoleRing) Write(p []byte) (int, error) {
	r.mu.Lock()
	rest := p
	for len(rest) > 0 {
		i := bytes.IndexByte(rest, '\n')
		chunk := rest
		if i >= 0 {
			chunk = rest[:i]
		}
		if !r.cut {
			room := maxLine - len(r.partial)
			if len(chunk) > room {
				chunk, r.cut = chunk[:room], true
			}
			r.partial = append(r.partial, chunk...)
		}
		if i < 0 {
			break
		}
		r.endLine()
		rest = rest[i+1:]
	}
	r.mu.Unlock()
	if r.next == nil {
		return len(p), nil
	}
	return r.next.Write(p)
}

// endLine moves the partial line into the ring. r.mu is held.
func (r *consoleRing) endLine() {
	line := strings.TrimRight(string(r.partial), "\r")
	r.partial, r.cut = r.partial[:0], false
	if strings.Contains(line, panicMarker) {
		select {
		case <-r.panicked:
		default:
			close(r.panicked)
		}
	}
	if i := strings.Index(line, agentErrorMarker); i >= 0 && len(r.agentErr) < 8 {
		r.agentErr = append(r.agentErr, line[i+len(agentErrorMarker):])
	}
	if len(r.lines) < cap(r.lines) {
		r.lines = append(r.lines, line)
		return
	}
	if cap(r.lines) == 0 {
		return
	}
	r.lines[r.start] = line
	r.start = (r.start + 1) % len(r.lines)
}

// tail returns the last n lines, oldest first, with an unfinished last
// line at the end.
func (r *consoleRing) tail(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	all := make([]string, 0, len(r.lines)+1)
	all = append(all, r.lines[r.start:]...)
	all = append(all, r.lines[:r.start]...)
	if len(r.partial) > 0 {
		all = append(all, strings.TrimRight(string(r.partial), "\r"))
	}
	if n >= 0 && len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// agentErrors returns the error lines the agent printed so far.
func (r *consoleRing) agentErrors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.agentErr...)
}
