package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// hangUpConn is a host that sends Hello and then goes away: its reads
// give the Hello, then err.
type hangUpConn struct {
	net.Conn // nil: only what the session uses is implemented
	in       *bytes.Reader
	err      error
}

func (c *hangUpConn) Read(p []byte) (int, error) {
	if c.in.Len() > 0 {
		return c.in.Read(p)
	}
	return 0, c.err
}
func (c *hangUpConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *hangUpConn) Close() error                     { return nil }
func (c *hangUpConn) SetDeadline(time.Time) error      { return nil }
func (c *hangUpConn) SetReadDeadline(time.Time) error  { return nil }
func (c *hangUpConn) SetWriteDeadline(time.Time) error { return nil }
func (c *hangUpConn) RemoteAddr() net.Addr             { return VsockAddr{CID: 2, Port: 1 << 30} }
func (c *hangUpConn) LocalAddr() net.Addr              { return VsockAddr{CID: 3, Port: DefaultPort} }

// TestProbeHangUp: a readiness probe (Hello, then hang-up) is no failure,
// whether the socket reads EOF or, as vsock does after a restore, ENOTCONN
// or ECONNRESET, or the handshake deadline passes (a probe that was open
// when a warm snapshot was taken: the restored guest's clock jumps past
// it); anything else still is.
func TestProbeHangUp(t *testing.T) {
	var hello bytes.Buffer
	if err := proto.NewWriter(&hello).Send(proto.TypeHello, 0, proto.Hello{Min: proto.MinVersion, Max: proto.Version}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		err  error
		fail bool
	}{
		{io.EOF, false},
		{&os.PathError{Op: "read", Path: "vsock", Err: syscall.ENOTCONN}, false},
		{&os.PathError{Op: "read", Path: "vsock", Err: syscall.ECONNRESET}, false},
		{&os.PathError{Op: "read", Path: "vsock", Err: os.ErrDeadlineExceeded}, false},
		{&os.PathError{Op: "read", Path: "vsock", Err: syscall.EIO}, true},
	} {
		srv := NewServer(Config{})
		err := srv.ServeConn(context.Background(), &hangUpConn{in: bytes.NewReader(hello.Bytes()), err: tc.err})
		if (err != nil) != tc.fail {
			t.Errorf("host hung up with %v: ServeConn = %v, want failure %v", tc.err, err, tc.fail)
		}
	}
}

// TestResetBeforeHello: a connection reset before its Hello was read (one
// the host gave up on, caught by a warm snapshot and reset by the restore)
// ends quietly; other read errors before the Hello are still failures.
func TestResetBeforeHello(t *testing.T) {
	for _, tc := range []struct {
		err  error
		fail bool
	}{
		{&os.PathError{Op: "read", Path: "vsock", Err: syscall.ENOTCONN}, false},
		{&os.PathError{Op: "read", Path: "vsock", Err: syscall.ECONNRESET}, false},
		{&os.PathError{Op: "read", Path: "vsock", Err: syscall.EIO}, true},
		{&os.PathError{Op: "read", Path: "vsock", Err: os.ErrDeadlineExceeded}, true},
	} {
		srv := NewServer(Config{})
		err := srv.ServeConn(context.Background(), &hangUpConn{in: bytes.NewReader(nil), err: tc.err})
		if (err != nil) != tc.fail {
			t.Errorf("read before the Hello failed with %v: ServeConn = %v, want failure %v", tc.err, err, tc.fail)
		}
	}
}
