package vsock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Firecracker's hybrid vsock, so host programs written for Firecracker
// work unchanged:
//
//   - host → guest: a program connects to the Unix socket at UDSPath and
//     writes "CONNECT <port>\n"; the device dials the guest's port and
//     answers "OK <host port>\n", and from then on the socket carries the
//     stream. When the guest refuses (or the line is bad) the socket is
//     closed without an answer.
//   - guest → host: a guest connection to host port P that no Listen
//     covers is forwarded to a Unix socket at "UDSPath_P", where a program
//     listens; when nobody does, the guest's connect is refused (RST).

// Limits of the CONNECT handshake.
const (
	maxConnectLine  = 64               // "CONNECT 4294967295\n" is 19 bytes
	connectTimeout  = 5 * time.Second  // to send the CONNECT line
	hybridDialLimit = 10 * time.Second // for the guest to answer, and for UDSPath_P to accept
)

// ParseConnect parses a hybrid vsock request line (without its "\n"):
// "CONNECT <port>", the port a decimal uint32. A trailing "\r" and spaces
// around the port are tolerated.
func ParseConnect(line string) (uint32, error) {
	line = strings.TrimSuffix(line, "\r")
	rest, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("vsock: hybrid request %q does not start with \"CONNECT \"", line)
	}
	p, err := strconv.ParseUint(strings.TrimSpace(rest), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("vsock: hybrid request %q: bad port: %w", line, err)
	}
	return uint32(p), nil
}

// hybrid serves the Unix socket side of one device.
type hybrid struct {
	d      *Device
	path   string
	ln     *net.UnixListener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // every Unix connection, closed by close
	closed bool
}

func newHybrid(d *Device, path string) (*hybrid, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vsock: hybrid socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	ctx, cancel := context.WithCancel(context.Background())
	h := &hybrid{d: d, path: path, ln: ln, ctx: ctx, cancel: cancel, conns: map[net.Conn]struct{}{}}
	h.wg.Add(1)
	go h.acceptLoop()
	return h, nil
}

// track records uc so close can end it; false when closing already.
func (h *hybrid) track(uc net.Conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[uc] = struct{}{}
	return true
}

func (h *hybrid) untrack(uc net.Conn) {
	h.mu.Lock()
	delete(h.conns, uc)
	h.mu.Unlock()
	uc.Close()
}

func (h *hybrid) acceptLoop() {
	defer h.wg.Done()
	for {
		uc, err := h.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || h.ctx.Err() != nil {
				return
			}
			h.d.log.Warn("vsock: hybrid socket accept", "err", err)
			select { // EMFILE and friends: back off rather than spin
			case <-time.After(50 * time.Millisecond):
			case <-h.ctx.Done():
				return
			}
			continue
		}
		if !h.track(uc) {
			uc.Close()
			return
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer h.untrack(uc)
			h.serveClient(uc)
		}()
	}
}

// serveClient does the CONNECT handshake and carries the stream.
func (h *hybrid) serveClient(uc net.Conn) {
	uc.SetReadDeadline(time.Now().Add(connectTimeout))
	br := bufio.NewReaderSize(uc, 4096)
	line, err := readLine(br, maxConnectLine)
	if err != nil {
		h.d.log.Debug("vsock: hybrid request", "err", err)
		return
	}
	port, err := ParseConnect(line)
	if err != nil {
		h.d.log.Debug("vsock: hybrid request", "err", err)
		return
	}
	uc.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(h.ctx, hybridDialLimit)
	vc, err := h.d.Dial(ctx, port)
	cancel()
	if err != nil {
		h.d.log.Debug("vsock: hybrid connect", "port", port, "err", err)
		return
	}
	uc.SetWriteDeadline(time.Now().Add(connectTimeout))
	if _, err := fmt.Fprintf(uc, "OK %d\n", vc.hostPort); err != nil {
		vc.Close()
		return
	}
	uc.SetWriteDeadline(time.Time{})
	h.splice(vc, uc, br)
}

// readLine reads one "\n"-terminated line of at most max bytes (without
// the "\n").
func readLine(br *bufio.Reader, max int) (string, error) {
	var b []byte
	for len(b) <= max {
		c, err := br.ReadByte()
		if err != nil {
			return "", fmt.Errorf("vsock: hybrid request line: %w", err)
		}
		if c == '\n' {
			return string(b), nil
		}
		b = append(b, c)
	}
	return "", fmt.Errorf("vsock: hybrid request line longer than %d bytes", max)
}

// dialGuestConnection connects a guest connection to host port to the
// program listening on UDSPath_port.
func (h *hybrid) dialGuestConnection(ctx context.Context, port uint32) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, hybridDialLimit)
	defer cancel()
	var dl net.Dialer
	return dl.DialContext(ctx, "unix", h.path+"_"+strconv.FormatUint(uint64(port), 10))
}

// splice carries vc's stream over uc (reading uc's side through src,
// which may hold bytes already read) until both directions ended, with
// half-closes passed on; it closes both.
func (h *hybrid) splice(vc *Conn, uc net.Conn, src io.Reader) {
	defer vc.Close()
	if !h.track(uc) {
		uc.Close()
		return
	}
	defer h.untrack(uc)
	toGuestDone := make(chan struct{})
	fromGuestDone := make(chan struct{})
	go func() { // guest → Unix socket
		defer close(fromGuestDone)
		if _, err := io.Copy(uc, vc); err == nil {
			if cw, ok := uc.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			// The guest finished sending; the other way goes on until it
			// closes or the Unix side finishes too.
			select {
			case <-vc.Done():
			case <-toGuestDone:
			}
		}
		uc.Close()
	}()
	_, err := io.Copy(vc, src) // Unix socket → guest
	if err == nil {
		vc.CloseWrite()
	} else {
		uc.Close()
	}
	close(toGuestDone)
	<-fromGuestDone
}

// close stops listening (removing the socket file), ends every Unix
// connection and waits for the goroutines.
func (h *hybrid) close() error {
	h.cancel()
	err := h.ln.Close()
	h.mu.Lock()
	h.closed = true
	for uc := range h.conns {
		uc.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("vsock: closing hybrid socket %s: %w", h.path, err)
	}
	return nil
}
