package task

import (
	"bytes"
	"io"
	"sync"
)

// lineBufMax is how much of an unfinished line lineWriter holds before
// passing it on anyway.
const lineBufMax = 4096

// lineWriter passes whole lines to out, one Write per batch of lines.
// The serial console hands its writer what the guest sent since the last
// flush, often a byte or two (under TCG, nearly a byte a write); each
// Write to the shim's log FIFO wakes containerd, which copies it to its
// log, so a cold boot's console cost about a write and a wake-up per
// byte. An unfinished line longer than lineBufMax goes as it is; one
// still held when the machine ends is lost (the VM's console ring keeps
// the tail for errors).
type lineWriter struct {
	mu  sync.Mutex
	out io.Writer
	buf []byte
}

func newLineWriter(out io.Writer) *lineWriter { return &lineWriter{out: out} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	n := len(w.buf)
	if n < lineBufMax {
		n = bytes.LastIndexByte(w.buf, '\n') + 1
	}
	if n == 0 {
		return len(p), nil
	}
	_, err := w.out.Write(w.buf[:n])
	w.buf = append(w.buf[:0], w.buf[n:]...)
	if err != nil {
		return 0, err
	}
	return len(p), nil
}
