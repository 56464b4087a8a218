package task

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/containerd/fifo"
)

// stdio are the paths containerd gives for a process's standard streams.
type stdio struct {
	Stdin, Stdout, Stderr string
	Terminal              bool
}

// procIO is a process's standard streams, opened.
type procIO struct {
	stdin          io.Reader      // what the process reads; nil: nothing
	stdinW         *io.PipeWriter // CloseIO closes it: the process sees EOF
	stdout, stderr io.Writer

	closers   []io.Closer
	closeOnce sync.Once
}

// openIO opens the streams: FIFOs (the default scheme, which ctr and the
// CRI plugin use) or file:// URIs (output appended to the file); other
// schemes (binary://) are refused. FIFOs are opened without waiting for
// the other side, so Create never hangs on a client that went away.
func openIO(s stdio) (*procIO, error) {
	p := &procIO{}
	ok := false
	defer func() {
		if !ok {
			p.Close()
		}
	}()
	if s.Stdin != "" {
		f, err := fifo.OpenFifo(context.Background(), s.Stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("shim: stdin %s: %w", s.Stdin, err)
		}
		p.closers = append(p.closers, f)
		// The process reads a pipe that CloseIO can end while a read of
		// the FIFO is still waiting for data.
		r, w := io.Pipe()
		p.stdin, p.stdinW = r, w
		go func() {
			_, err := io.Copy(w, f)
			w.CloseWithError(err)
		}()
	}
	var err error
	if p.stdout, err = p.openOut("stdout", s.Stdout); err != nil {
		return nil, err
	}
	if !s.Terminal {
		if p.stderr, err = p.openOut("stderr", s.Stderr); err != nil {
			return nil, err
		}
	}
	ok = true
	return p, nil
}

func (p *procIO) openOut(name, path string) (io.Writer, error) {
	if path == "" {
		return nil, nil
	}
	u, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("shim: %s %q: %w", name, path, err)
	}
	var w io.WriteCloser
	switch u.Scheme {
	case "", "fifo":
		if u.Scheme == "" {
			u.Path = path
		}
		w, err = fifo.OpenFifo(context.Background(), u.Path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	case "file":
		if err = os.MkdirAll(filepath.Dir(u.Path), 0o755); err == nil {
			w, err = os.OpenFile(u.Path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		}
	default:
		return nil, fmt.Errorf("shim: %s %q: the %s:// scheme is not supported (FIFOs and file:// are)", name, path, u.Scheme)
	}
	if err != nil {
		return nil, fmt.Errorf("shim: %s %s: %w", name, path, err)
	}
	p.closers = append(p.closers, w)
	return w, nil
}

// CloseStdin gives the process the end of its standard input.
func (p *procIO) CloseStdin() {
	if p.stdinW != nil {
		p.stdinW.Close()
	}
}

// Close closes every stream: containerd's readers see the end of output.
func (p *procIO) Close() error {
	var errs []error
	p.closeOnce.Do(func() {
		p.CloseStdin()
		for _, c := range p.closers {
			if err := c.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	})
	return errors.Join(errs...)
}
