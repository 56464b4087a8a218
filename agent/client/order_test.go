package client

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent/proto"
)

// CombinedOutput gives the two streams' bytes in the order the agent sent
// them, as os/exec's one pipe does.
func TestCombinedOutputOrder(t *testing.T) {
	fs := []proto.Frame{hello(proto.Version), {Type: proto.TypeStarted, Payload: proto.AppendU32(nil, 7)}}
	var want strings.Builder
	for i := range 200 {
		s, p := proto.StreamStdout, fmt.Sprintf("o%d\n", i)
		if i%2 == 1 {
			s, p = proto.StreamStderr, fmt.Sprintf("e%d\n", i)
		}
		want.WriteString(p)
		fs = append(fs, proto.Frame{Type: proto.TypeData, Stream: s, Payload: []byte(p)})
	}
	fs = append(fs,
		proto.Frame{Type: proto.TypeClose, Stream: proto.StreamStdout},
		proto.Frame{Type: proto.TypeClose, Stream: proto.StreamStderr},
		proto.Frame{Type: proto.TypeExit, Payload: proto.Exit{}.Append(nil)})
	out, err := Command(fakeAgent(frames(t, fs...)), "x").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != want.String() {
		t.Errorf("CombinedOutput gave\n%q\nwant the agent's order\n%q", out, want.String())
	}
}

// creditAgent is a fake agent that sends stdout and stderr from a
// goroutine each, as corral-agent does, each within the credit the client
// granted for it, and records the order its Data frames went out in.
type creditAgent struct {
	t        *testing.T
	conn     net.Conn
	w        *proto.Writer
	credited [2]chan struct{} // a Credit for stdout, stderr arrived
	stop     chan struct{}    // the test ended
	wg       sync.WaitGroup   // the agent's goroutines

	sendMu sync.Mutex   // one Data frame and its record at a time
	order  bytes.Buffer // the Data sent, in wire order

	mu      sync.Mutex
	credit  [2]uint64 // unused credit
	granted [2]uint64 // all credit received
	sent    [2]int    // Data bytes sent
}

// startCreditAgent runs a creditAgent on conn sending out[0] on stdout and
// out[1] on stderr; stdout waits until lead frames of stderr went out.
// Once the client has closed conn, a.wg.Wait() returns.
func startCreditAgent(t *testing.T, conn net.Conn, out [2][]string, lead int) *creditAgent {
	a := &creditAgent{t: t, conn: conn, w: proto.NewWriter(conn), stop: make(chan struct{}),
		credited: [2]chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1)}}
	t.Cleanup(func() {
		close(a.stop)
		conn.Close()
		a.wg.Wait()
	})
	r := proto.NewReader(conn, proto.FromHost)
	a.wg.Go(func() {
		if f, err := r.Next(); err != nil || f.Type != proto.TypeHello {
			t.Errorf("agent: first frame %v, %v; want Hello", f.Type, err)
			conn.Close()
			return
		}
		a.w.Send(proto.TypeHello, 0, proto.Hello{Min: proto.Version, Max: proto.Version}.Append(nil))
		a.wg.Go(func() { a.readCredit(r) })
		a.w.Send(proto.TypeStarted, 0, proto.AppendU32(nil, 7))
		led := make(chan struct{})
		endLead := sync.OnceFunc(func() { close(led) })
		var senders sync.WaitGroup
		for i, s := range []proto.Stream{proto.StreamStdout, proto.StreamStderr} {
			senders.Go(func() {
				if i == 0 {
					<-led
				} else {
					defer endLead()
				}
				for k, p := range out[i] {
					if i == 1 && k == lead {
						endLead()
					}
					if err := a.await(i, len(p)); err == errStopped {
						return
					} else if err != nil {
						t.Errorf("agent: %s after %d bytes (granted %d): %v", s, a.sentOf(i), a.grantedOf(i), err)
						conn.Close()
						return
					}
					a.send(i, s, p)
				}
				a.w.Send(proto.TypeClose, s, nil)
			})
		}
		senders.Wait()
		a.w.Send(proto.TypeExit, 0, proto.Exit{}.Append(nil))
	})
	return a
}

// readCredit counts the client's Credit frames until it closes.
func (a *creditAgent) readCredit(r *proto.Reader) {
	for {
		f, err := r.Next()
		if err != nil {
			return
		}
		if f.Type != proto.TypeCredit || f.Stream == proto.StreamStdin {
			continue
		}
		n, err := proto.ParseCredit(f.Payload)
		if err != nil {
			a.t.Errorf("agent: bad Credit: %v", err)
			continue
		}
		i := int(f.Stream - proto.StreamStdout)
		a.mu.Lock()
		a.credit[i] += uint64(n)
		a.granted[i] += uint64(n)
		a.mu.Unlock()
		select {
		case a.credited[i] <- struct{}{}:
		default:
		}
	}
}

var errStopped = errors.New("test ended")

// await takes n bytes of stream i's credit, waiting up to 10s for them
// (errStopped when the test ends first).
func (a *creditAgent) await(i, n int) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.credit[i] < uint64(n) {
		a.mu.Unlock()
		select {
		case <-a.credited[i]:
		case <-a.stop:
			a.mu.Lock()
			return errStopped
		case <-time.After(10 * time.Second):
			a.mu.Lock()
			return errors.New("no credit for 10s")
		}
		a.mu.Lock()
	}
	a.credit[i] -= uint64(n)
	return nil
}

// send sends p on stream s (index i) and records it in the order sent.
func (a *creditAgent) send(i int, s proto.Stream, p string) {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	a.w.Send(proto.TypeData, s, []byte(p))
	a.order.WriteString(p)
	a.mu.Lock()
	a.sent[i] += len(p)
	a.mu.Unlock()
}

func (a *creditAgent) sentOf(i int) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.sent[i]
}

func (a *creditAgent) grantedOf(i int) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.granted[i]
}

// lines returns n lines of 8 bytes each, tagged by tag.
func lines(tag string, n int) []string {
	var l []string
	for k := range n {
		l = append(l, fmt.Sprintf("%s%06d\n", tag, k))
	}
	return l
}

// blockWriter blocks its first Write until gate is closed.
type blockWriter struct {
	gate chan struct{}
	once sync.Once
	buf  bytes.Buffer
}

func (w *blockWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { <-w.gate })
	return w.buf.Write(p)
}

// One shared writer that blocks: both streams fill their windows and stop,
// one before the other (stderr's first bytes queued ahead of stdout's), and
// no credit comes back before the writer takes the bytes. Once it does, the one queue drains in order and
// each stream's credit comes back for its own bytes: nothing deadlocks.
func TestSharedBlockedWriterCredit(t *testing.T) {
	const window = 64 // 8 lines
	host, guest := net.Pipe()
	a := startCreditAgent(t, guest, [2][]string{lines("o", 100), lines("e", 60)}, 3)
	w := &blockWriter{gate: make(chan struct{})}
	open := sync.OnceFunc(func() { close(w.gate) })
	t.Cleanup(open)
	c := Command(host, "x")
	c.Stdout, c.Stderr, c.Window = w, w, window
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// Both senders stop at a full window, whatever their interleaving.
	deadline := time.Now().Add(10 * time.Second)
	for a.sentOf(0) < window || a.sentOf(1) < window {
		if time.Now().After(deadline) {
			t.Fatalf("agent sent %d, %d bytes to a blocked writer, want a window (%d) of each", a.sentOf(0), a.sentOf(1), window)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for wrongly returned credit
	if o, e := a.sentOf(0), a.sentOf(1); o != window || e != window {
		t.Errorf("agent sent %d, %d bytes before the blocked writer took any, want %d each", o, e, window)
	}
	open()
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Wait hung: credit did not flow after the writer unblocked")
	}
	a.wg.Wait()
	if w.buf.String() != a.order.String() {
		t.Errorf("writer got\n%q\nwant the agent's order\n%q", w.buf.String(), a.order.String())
	}
	for i, n := range []int{800, 480} {
		if a.sent[i] != n || a.granted[i] != uint64(window+n) {
			t.Errorf("stream %d: agent sent %d bytes and got %d credit, want %d and %d", i, a.sent[i], a.granted[i], n, window+n)
		}
	}
	if mb := c.Stats().MaxBuffered; mb[0] > window || mb[1] > window || mb[0] == 0 || mb[1] == 0 {
		t.Errorf("MaxBuffered %v, want each in 1..%d", mb, window)
	}
}

var errWrite = errors.New("disk full")

type errWriter struct{}

func (errWriter) Write(p []byte) (int, error) { return 0, errWrite }

// A shared writer that fails still has every byte's credit returned, so
// the command runs to its end (many windows of each stream), and Wait
// reports the write error.
func TestSharedFailingWriterCredit(t *testing.T) {
	const window = 64
	host, guest := net.Pipe()
	a := startCreditAgent(t, guest, [2][]string{lines("o", 40), lines("e", 40)}, 0)
	c := Command(host, "x")
	c.Stdout, c.Stderr, c.Window = errWriter{}, errWriter{}, window
	done := make(chan error, 1)
	go func() { done <- c.Run() }()
	select {
	case err := <-done:
		if !errors.Is(err, errWrite) || !strings.Contains(err.Error(), "writing") {
			t.Fatalf("Run: %v, want the write error", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run hung: a failing writer held the credit back")
	}
	a.wg.Wait()
	if a.sent != [2]int{320, 320} || a.granted != [2]uint64{window + 320, window + 320} {
		t.Errorf("agent sent %v bytes and got %v credit, want 320 and %d of each", a.sent, a.granted, window+320)
	}
}
