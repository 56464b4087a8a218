package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent/proto"
)

// rawSession serves one session on a pipe and returns the host's end, a
// frame reader for it and the channel ServeConn's result arrives on.
func rawSession(t *testing.T, srv *Server) (net.Conn, *proto.Writer, *proto.Reader, chan error) {
	t.Helper()
	host, guest := net.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), guest) }()
	t.Cleanup(func() { host.Close() })
	return host, proto.NewWriter(host), proto.NewReader(host, proto.FromAgent), done
}

func next(t *testing.T, r *proto.Reader, want proto.Type) proto.Frame {
	t.Helper()
	f, err := r.Next()
	if err != nil {
		t.Fatalf("reading %s: %v", want, err)
	}
	if f.Type != want {
		if f.Type == proto.TypeError {
			e, _ := proto.ParseError(f.Payload)
			t.Fatalf("got %v, want %s", e, want)
		}
		t.Fatalf("got %s, want %s", f.Type, want)
	}
	return f
}

func wantError(t *testing.T, r *proto.Reader, code proto.ErrorCode, text string) {
	t.Helper()
	f := next(t, r, proto.TypeError)
	e, err := proto.ParseError(f.Payload)
	if err != nil || e.Code != code || !strings.Contains(e.Message, text) {
		t.Fatalf("Error %v (%v), want %s containing %q", e, err, code, text)
	}
}

func result(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn did not return")
		return nil
	}
}

func hello(t *testing.T, w *proto.Writer, r *proto.Reader) {
	t.Helper()
	if err := w.Send(proto.TypeHello, 0, proto.Hello{Min: proto.MinVersion, Max: proto.Version}.Append(nil)); err != nil {
		t.Fatal(err)
	}
	next(t, r, proto.TypeHello)
}

func TestGarbageFromHost(t *testing.T) {
	srv := NewServer(Config{})
	host, _, r, done := rawSession(t, srv)
	go host.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	wantError(t, r, proto.CodeProtocol, "unknown message type 71")
	if err := result(t, done); !errors.Is(err, proto.ErrProtocol) {
		t.Errorf("ServeConn: %v, want ErrProtocol", err)
	}
	if srv.Stats().ProtocolErrors != 1 {
		t.Errorf("ProtocolErrors %d, want 1", srv.Stats().ProtocolErrors)
	}
}

func TestBadExecPayload(t *testing.T) {
	srv := NewServer(Config{})
	_, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	go w.Send(proto.TypeExec, 0, make([]byte, 30))
	wantError(t, r, proto.CodeProtocol, "Exec claims 0 arguments and 0 variables in 6 bytes")
	if err := result(t, done); !errors.Is(err, proto.ErrProtocol) {
		t.Errorf("ServeConn: %v, want ErrProtocol", err)
	}
}

func TestVersionMismatch(t *testing.T) {
	srv := NewServer(Config{})
	_, w, r, done := rawSession(t, srv)
	go w.Send(proto.TypeHello, 0, proto.Hello{Min: 7, Max: 9}.Append(nil))
	wantError(t, r, proto.CodeVersion, fmt.Sprintf("peer speaks protocol versions 7..9, this side %d..%d", proto.MinVersion, proto.Version))
	if err := result(t, done); err != nil {
		t.Errorf("ServeConn: %v", err)
	}
	if _, err := r.Next(); err != io.EOF {
		t.Errorf("after the refusal: %v, want EOF", err)
	}
}

func TestHandshakeTimeout(t *testing.T) {
	srv := NewServer(Config{HandshakeTimeout: 50 * time.Millisecond})
	_, _, _, done := rawSession(t, srv)
	if err := result(t, done); err == nil || !strings.Contains(err.Error(), "Hello") {
		t.Errorf("ServeConn with a silent host: %v", err)
	}
}

func startExec(t *testing.T, w *proto.Writer, r *proto.Reader, e *proto.Exec) int {
	t.Helper()
	p, err := e.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	go w.Send(proto.TypeExec, 0, p)
	pid, _ := proto.ParseU32(next(t, r, proto.TypeStarted).Payload)
	next(t, r, proto.TypeCredit)
	return int(pid)
}

func TestStdinOverCredit(t *testing.T) {
	if _, err := exec.LookPath("sleep"); err != nil {
		t.Skip("no sleep")
	}
	srv := NewServer(Config{StdinWindow: 16})
	_, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	pid := startExec(t, w, r, &proto.Exec{Path: "sleep", Args: []string{"sleep", "100"}})
	go w.Send(proto.TypeData, proto.StreamStdin, make([]byte, 17))
	wantError(t, r, proto.CodeProtocol, "17 stdin bytes with 16 bytes of credit")
	if err := result(t, done); !errors.Is(err, proto.ErrProtocol) {
		t.Errorf("ServeConn: %v, want ErrProtocol", err)
	}
	waitGone(t, pid)
}

func TestHostGoneKillsCommand(t *testing.T) {
	srv := NewServer(Config{})
	host, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	pid := startExec(t, w, r, &proto.Exec{Path: "sleep", Args: []string{"sleep", "100"}})
	host.Close()
	if err := result(t, done); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ServeConn: %v, want ErrUnexpectedEOF", err)
	}
	waitGone(t, pid)
}

// waitGone waits until pid no longer exists (the agent killed and reaped it).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
		if unix.Kill(pid, 0) == unix.ESRCH {
			return
		}
	}
	t.Errorf("pid %d still exists", pid)
}

func TestSecondRequestRefused(t *testing.T) {
	srv := NewServer(Config{})
	_, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	startExec(t, w, r, &proto.Exec{Path: "sleep", Args: []string{"sleep", "100"}})
	go w.Send(proto.TypePowerOff, 0, nil)
	wantError(t, r, proto.CodeProtocol, "host sent PowerOff while a command runs")
	if err := result(t, done); !errors.Is(err, proto.ErrProtocol) {
		t.Errorf("ServeConn: %v", err)
	}
}

func TestParseShares(t *testing.T) {
	got, err := ParseShares("console=ttyS0 corral.share=home:/home/u corral.share=src_1:/mnt/src/:ro quiet")
	if err != nil {
		t.Fatal(err)
	}
	want := []Share{{Tag: "home", Path: "/home/u"}, {Tag: "src_1", Path: "/mnt/src", ReadOnly: true}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ParseShares = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"corral.share=home", "corral.share=:/x", "corral.share=t:rel", "corral.share=t a:/x", "corral.share=" + strings.Repeat("t", 32) + ":/x", "corral.share=t:/x:rw"} {
		if _, err := ParseShares(bad); err == nil {
			t.Errorf("ParseShares(%q) accepted", bad)
		}
	}
}

func TestListen(t *testing.T) {
	for _, bad := range []string{"nope", "udp:1", "vsock:x"} {
		if _, err := Listen(bad); err == nil {
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	l, err := Listen("tcp:127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	// vsock needs the vsock modules (vsock_loopback to connect locally).
	l, err = ListenVsock(DefaultPort + 77)
	if err != nil {
		t.Skipf("no vsock here: %v", err)
	}
	defer l.Close()
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Skip(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: DefaultPort + 77}); err != nil {
		t.Skipf("no vsock loopback: %v", err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unix.Write(fd, []byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("read %q, %v", buf, err)
	}
}

func TestShutdownKillsCommand(t *testing.T) {
	srv := NewServer(Config{})
	host, guest := net.Pipe()
	defer host.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(ctx, guest) }()
	w, r := proto.NewWriter(host), proto.NewReader(host, proto.FromAgent)
	hello(t, w, r)
	pid := startExec(t, w, r, &proto.Exec{Path: "sleep", Args: []string{"sleep", "100"}})
	cancel()
	wantError(t, r, proto.CodeInternal, "shutting down")
	if err := result(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("ServeConn: %v, want context.Canceled", err)
	}
	waitGone(t, pid)
}

// A host that hangs up after the greeting (agentvm.Start's readiness
// probe) ends the session without an error: the agent logs none.
func TestHangUpAfterHello(t *testing.T) {
	srv := NewServer(Config{})
	host, w, r, done := rawSession(t, srv)
	hello(t, w, r)
	host.Close()
	if err := result(t, done); err != nil {
		t.Errorf("ServeConn after a hang-up at the request: %v, want nil", err)
	}
}
