package main

import "io"

// escapeKey is Ctrl-A, the console escape prefix (as in QEMU).
const escapeKey = 0x01

// escapeReader passes console input through to the guest, except for the
// escape sequences: Ctrl-A x quits, Ctrl-A Ctrl-A sends one Ctrl-A, Ctrl-A h
// prints help. Other bytes after Ctrl-A are dropped with the prefix.
type escapeReader struct {
	r       io.Reader
	quit    func()
	help    func()
	pending bool // saw Ctrl-A, waiting for the command byte
	buf     []byte
}

func newEscapeReader(r io.Reader, quit, help func()) *escapeReader {
	return &escapeReader{r: r, quit: quit, help: help, buf: make([]byte, 256)}
}

// Read returns filtered input; after Ctrl-A x it returns io.EOF.
func (e *escapeReader) Read(p []byte) (int, error) {
	for {
		n, err := e.r.Read(e.buf[:min(len(e.buf), len(p))])
		out := 0
		for _, c := range e.buf[:n] {
			if e.pending {
				e.pending = false
				switch c {
				case 'x', 'X':
					e.quit()
					return out, io.EOF
				case escapeKey:
					p[out] = escapeKey
					out++
				case 'h', 'H', '?':
					e.help()
				}
				continue
			}
			if c == escapeKey {
				e.pending = true
				continue
			}
			p[out] = c
			out++
		}
		if out > 0 || err != nil {
			return out, err
		}
	}
}
