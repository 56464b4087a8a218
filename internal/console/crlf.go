package console

import (
	"io"
	"os"
	"time"
)

// CRLFWriter turns a bare LF (one not preceded by CR) into CR LF, as a
// terminal in raw mode needs: without the tty's output processing a guest
// printing "\n" alone would make its lines staircase. It forwards
// SetWriteDeadline so bounded writes still work through it.
type CRLFWriter struct {
	w      io.Writer
	lastCR bool // the previous byte written was CR
	buf    []byte
}

// NewCRLFWriter returns a CRLFWriter writing to w.
func NewCRLFWriter(w io.Writer) *CRLFWriter { return &CRLFWriter{w: w} }

// Write translates p and writes it. On a short write it reports how many
// bytes of p were fully written.
func (c *CRLFWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	last := c.lastCR
	for _, b := range p {
		if b == '\n' && !last {
			c.buf = append(c.buf, '\r')
		}
		c.buf = append(c.buf, b)
		last = b == '\r'
	}
	n, err := c.w.Write(c.buf)
	if err == nil && n == len(c.buf) {
		c.lastCR = last
		return len(p), nil
	}
	// Map n output bytes back to whole input bytes.
	consumed, out := 0, 0
	last = c.lastCR
	for _, b := range p {
		w := 1
		if b == '\n' && !last {
			w = 2
		}
		if out+w > n {
			break
		}
		out += w
		consumed++
		last = b == '\r'
	}
	c.lastCR = last
	if err == nil {
		err = io.ErrShortWrite
	}
	return consumed, err
}

// SetWriteDeadline forwards to the underlying writer when it has deadlines.
func (c *CRLFWriter) SetWriteDeadline(t time.Time) error {
	if d, ok := c.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		return d.SetWriteDeadline(t)
	}
	return os.ErrNoDeadline
}
