package client

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// fakeAgent answers a client on a pipe with script, whatever it sends,
// then closes.
func fakeAgent(script []byte) net.Conn {
	host, guest := net.Pipe()
	go func() {
		go io.Copy(io.Discard, guest)
		guest.Write(script)
		guest.Close()
	}()
	return host
}

// frames encodes agent frames.
func frames(t testing.TB, fs ...proto.Frame) []byte {
	var b bytes.Buffer
	w := proto.NewWriter(&b)
	for _, f := range fs {
		if err := w.Send(f.Type, f.Stream, f.Payload); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

func hello(v uint16) proto.Frame {
	return proto.Frame{Type: proto.TypeHello, Payload: proto.Hello{Min: v, Max: v}.Append(nil)}
}

func goodSession(t testing.TB) []byte {
	return frames(t,
		hello(proto.Version),
		proto.Frame{Type: proto.TypeStarted, Payload: proto.AppendU32(nil, 7)},
		proto.Frame{Type: proto.TypeCredit, Stream: proto.StreamStdin, Payload: proto.AppendU32(nil, 4)},
		proto.Frame{Type: proto.TypeData, Stream: proto.StreamStdout, Payload: []byte("out")},
		proto.Frame{Type: proto.TypeData, Stream: proto.StreamStderr, Payload: []byte("err")},
		proto.Frame{Type: proto.TypeClose, Stream: proto.StreamStdout},
		proto.Frame{Type: proto.TypeClose, Stream: proto.StreamStderr},
		proto.Frame{Type: proto.TypeExit, Payload: proto.Exit{Value: 2}.Append(nil)},
	)
}

// run runs a command against script, failing the test if it hangs.
func run(t testing.TB, script []byte) (string, error) {
	done := make(chan struct{})
	var out bytes.Buffer
	var err error
	go func() {
		defer close(done)
		c := Command(fakeAgent(script), "x")
		c.Stdin = strings.NewReader("some input")
		c.Stdout, c.Stderr = &out, &out
		c.Window = 64
		err = c.Run()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("client hung on agent bytes %x", script)
	}
	return out.String(), err
}

// Each stream's bytes reach its own writer (TestCombinedOutputOrder checks
// the two in one shared writer).
func TestFakeAgentGood(t *testing.T) {
	var out, errb bytes.Buffer
	c := Command(fakeAgent(goodSession(t)), "x")
	c.Stdin = strings.NewReader("some input")
	c.Stdout, c.Stderr = &out, &errb
	c.Window = 64
	err := c.Run()
	var ee *ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || out.String() != "out" || errb.String() != "err" {
		t.Fatalf("got stdout %q, stderr %q, %v", out.String(), errb.String(), err)
	}
}

func TestAgentGarbage(t *testing.T) {
	good := goodSession(t)
	helloLen := proto.HeaderSize + 8
	for _, tc := range []struct {
		name, want string
		script     []byte
	}{
		{"not an agent", "unknown message type 72", []byte("HTTP/1.1 400 Bad Request\r\n\r\n")},
		{"silent", "agent closed the connection", nil},
		{"wrong magic", "Hello magic", append(frames(t, hello(1))[:proto.HeaderSize], "XXXX\x01\x00\x01\x00"...)},
		{"newer agent", "agent chose protocol versions 9..9", frames(t, hello(9))},
		{"version refused", "version mismatch", frames(t, proto.Frame{Type: proto.TypeError, Payload: (&proto.Error{Code: proto.CodeVersion, Message: "no"}).Append(nil)})},
		{"no Started", "agent sent Exit, want Started", append(good[:helloLen:helloLen], frames(t, proto.Frame{Type: proto.TypeExit, Payload: proto.Exit{}.Append(nil)})...)},
		{"over credit", "65 bytes on stdout with 64 bytes of credit", append(good[:helloLen+proto.HeaderSize+4:helloLen+proto.HeaderSize+4], frames(t, proto.Frame{Type: proto.TypeData, Stream: proto.StreamStdout, Payload: make([]byte, 65)})...)},
		{"exit before close", "Exit before closing stdout", append(good[:helloLen+proto.HeaderSize+4:helloLen+proto.HeaderSize+4], frames(t, proto.Frame{Type: proto.TypeExit, Payload: proto.Exit{}.Append(nil)})...)},
		{"cut", "reading 8-byte Exit payload from agent: unexpected EOF", good[:len(good)-3]},
		{"ends early", "agent closed the connection before the exit status", good[:helloLen+proto.HeaderSize+4]},
	} {
		_, err := run(t, tc.script)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if _, err := run(t, frames(t, hello(9))); !errors.Is(err, ErrVersion) {
		t.Errorf("newer agent: %v is not ErrVersion", err)
	}
}

// FuzzClientSession feeds arbitrary agent bytes to a running Cmd: it must
// end with a result or an error, never hang or panic.
func FuzzClientSession(f *testing.F) {
	f.Add(goodSession(f))
	f.Fuzz(func(t *testing.T, script []byte) {
		_, err := run(t, script)
		if err == nil && !bytes.Contains(script, []byte{byte(proto.TypeExit), 0, 0, 0, 8, 0, 0, 0}) {
			t.Fatalf("success without an Exit frame from %x", script)
		}
	})
}

// brokenConn fails every write after the first ok ones with EPIPE, as a
// socket does once the agent has closed it, while reads still deliver
// what the agent sent before it closed.
type brokenConn struct {
	net.Conn
	ok int
}

func (c *brokenConn) Write(p []byte) (int, error) {
	if c.ok == 0 {
		return 0, syscall.EPIPE
	}
	c.ok--
	return c.Conn.Write(p)
}

// TestStartErrorAfterBrokenPipe: an agent that refuses the command and
// closes before reading the Credit frames must still be heard. Start used
// to return the EPIPE of the Credit write instead of the agent's reason
// (corral exec then said 126 instead of 127).
func TestStartErrorAfterBrokenPipe(t *testing.T) {
	refusal := &proto.Error{Code: proto.CodeStart, Message: "exec: \"x\": executable file not found in $PATH"}
	script := frames(t, hello(proto.Version), proto.Frame{Type: proto.TypeError, Payload: refusal.Append(nil)})
	for ok := 1; ok <= 3; ok++ { // Hello, then Exec, then the first Credit fail
		c := Command(&brokenConn{Conn: fakeAgent(script), ok: ok}, "x")
		err := c.Start()
		if !errors.Is(err, &proto.Error{Code: proto.CodeStart}) || !strings.Contains(err.Error(), "not found") {
			t.Errorf("writes ok before EPIPE %d: Start: %v, want the agent's refusal", ok, err)
		}
	}
}

// overlapWriter records whether two Writes were ever in progress at once.
type overlapWriter struct {
	in      atomic.Int32
	overlap atomic.Bool
	mu      sync.Mutex
	b       bytes.Buffer
}

func (w *overlapWriter) Write(p []byte) (int, error) {
	if w.in.Add(1) > 1 {
		w.overlap.Store(true)
	}
	time.Sleep(200 * time.Microsecond) // widen the window
	w.mu.Lock()
	w.b.Write(p)
	w.mu.Unlock()
	w.in.Add(-1)
	return len(p), nil
}

// With Stdout and Stderr the same writer, it gets one Write at a time (as
// os/exec promises), while the two streams arrive interleaved.
func TestSameWriterOneWriteAtATime(t *testing.T) {
	fs := []proto.Frame{hello(proto.Version), {Type: proto.TypeStarted, Payload: proto.AppendU32(nil, 7)}}
	for range 40 {
		fs = append(fs,
			proto.Frame{Type: proto.TypeData, Stream: proto.StreamStdout, Payload: []byte("o")},
			proto.Frame{Type: proto.TypeData, Stream: proto.StreamStderr, Payload: []byte("e")})
	}
	fs = append(fs,
		proto.Frame{Type: proto.TypeClose, Stream: proto.StreamStdout},
		proto.Frame{Type: proto.TypeClose, Stream: proto.StreamStderr},
		proto.Frame{Type: proto.TypeExit, Payload: proto.Exit{}.Append(nil)})
	w := &overlapWriter{}
	c := Command(fakeAgent(frames(t, fs...)), "x")
	c.Stdout, c.Stderr = w, w
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	if w.overlap.Load() {
		t.Error("two Writes at once to the writer that is both Stdout and Stderr")
	}
	if got := w.b.Len(); got != 80 {
		t.Errorf("%d bytes written, want 80", got)
	}
}
