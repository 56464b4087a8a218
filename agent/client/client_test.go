package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/agent/proto"
)

// serve runs an agent Server on a unix socket and returns it and a dialer.
func serve(t *testing.T, cfg agent.Config) (*agent.Server, func() net.Conn) {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	path := filepath.Join(t.TempDir(), "agent.sock")
	l, err := agent.Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	srv := agent.NewServer(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ctx, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return srv, func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}

func TestOutputErrorStatus(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	var out, errb bytes.Buffer
	c := client.Command(dial(), "sh", "-c", "echo out; echo err >&2; exit 3")
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || ee.Signal() != -1 || err.Error() != "exit status 3" {
		t.Fatalf("Run: %v, want exit status 3", err)
	}
	if out.String() != "out\n" || errb.String() != "err\n" {
		t.Errorf("stdout %q stderr %q, want \"out\\n\" \"err\\n\"", out.String(), errb.String())
	}
	if c.Pid() <= 0 {
		t.Errorf("Pid %d", c.Pid())
	}
}

func TestOutputHelpers(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	out, err := client.Command(dial(), "sh", "-c", "echo a; echo b >&2; exit 1").Output()
	var ee *client.ExitError
	if !errors.As(err, &ee) || string(out) != "a\n" || string(ee.Stderr) != "b\n" {
		t.Errorf("Output: %q, %v (stderr %q)", out, err, ee.Stderr)
	}
	comb, err := client.Command(dial(), "sh", "-c", "echo a; sleep 0.05; echo b >&2").CombinedOutput()
	if err != nil || string(comb) != "a\nb\n" {
		t.Errorf("CombinedOutput: %q, %v", comb, err)
	}
	c := client.Command(dial(), "pwd")
	c.Dir = "/"
	c.Env = []string{"PATH=/usr/bin:/bin"}
	if out, err := c.Output(); err != nil || string(out) != "/\n" {
		t.Errorf("pwd in /: %q, %v", out, err)
	}
	// A working directory the guest lacks is named as such, not as the
	// program ("fork/exec /usr/bin/pwd: no such file or directory").
	missing := filepath.Join(t.TempDir(), "gone")
	c = client.Command(dial(), "pwd")
	c.Dir = missing
	if _, err := c.Output(); err == nil || !strings.Contains(err.Error(), "working directory "+missing+": no such file or directory") {
		t.Errorf("pwd in a missing directory: %v, want the working directory named", err)
	}
	c = client.Command(dial(), "sh", "-c", `echo "$FOO"`)
	c.Env = []string{"FOO=bar baz"}
	if out, err := c.Output(); err != nil || string(out) != "bar baz\n" {
		t.Errorf("env: %q, %v", out, err)
	}
}

func TestCat16MiB(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	in := make([]byte, 16<<20)
	rand.Read(in)
	var out bytes.Buffer
	c := client.Command(dial(), "cat")
	c.Stdin, c.Stdout = bytes.NewReader(in), &out
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	if out.Len() != len(in) || sha256.Sum256(out.Bytes()) != sha256.Sum256(in) {
		t.Fatalf("cat gave %d bytes back, differing from the %d sent", out.Len(), len(in))
	}
}

func TestSignal(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	c := client.Command(dial(), "sleep", "100")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	if err := c.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := c.Wait()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.Signal() != syscall.SIGTERM || ee.ExitCode() != -1 || ee.ShellStatus() != 128+15 {
		t.Fatalf("Wait: %v, want signal: terminated (143)", err)
	}
	if err.Error() != "signal: terminated" {
		t.Errorf("error %q", err)
	}
}

func TestContextKillsGroup(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	// The background sleep holds stdout: only a group kill ends the output.
	c := client.CommandContext(ctx, dial(), "sh", "-c", "sleep 100 & sleep 100; wait")
	start := time.Now()
	err := c.Run()
	var ee *client.ExitError
	if !errors.As(err, &ee) || ee.Signal() != syscall.SIGKILL {
		t.Fatalf("Run: %v, want signal: killed", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v", d)
	}
}

// gateWriter blocks its first Write until the gate opens.
type gateWriter struct {
	gate chan struct{}
	once sync.Once
	buf  bytes.Buffer
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { <-w.gate })
	return w.buf.Write(p)
}

func TestSlowReaderHoldsCommand(t *testing.T) {
	const window = 64 << 10
	srv, dial := serve(t, agent.Config{StdinWindow: window})
	in := make([]byte, 8<<20)
	rand.Read(in)
	out := &gateWriter{gate: make(chan struct{})}
	c := client.Command(dial(), "cat")
	c.Stdin, c.Stdout, c.Window = bytes.NewReader(in), out, window
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	// The writer has taken nothing, so the agent may have sent one window
	// and no more; cat is blocked on its pipe, and stdin waits for it.
	st := srv.Stats()
	if st.BytesOut > window {
		t.Errorf("agent sent %d bytes to a stalled reader, window %d", st.BytesOut, window)
	}
	if st.BytesIn >= uint64(len(in)) {
		t.Errorf("agent fed all %d bytes of stdin while stdout was stalled", st.BytesIn)
	}
	close(out.gate)
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.buf.Bytes(), in) {
		t.Fatalf("got %d bytes back, not the %d sent", out.buf.Len(), len(in))
	}
	if mb := c.Stats().MaxBuffered[0]; mb > window || mb == 0 {
		t.Errorf("client held up to %d stdout bytes, window %d", mb, window)
	}
	if q := srv.Stats().MaxStdinQueued; q > window {
		t.Errorf("agent held up to %d stdin bytes, window %d", q, window)
	}
}

func TestCommandClosesStdin(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	// Endless stdin: the command closes it, the agent says so, the client
	// stops sending, and Run ends.
	c := client.Command(dial(), "sh", "-c", "exec 0<&-; sleep 0.1; echo done")
	c.Stdin = zeroReader{}
	out, err := c.Output()
	if err != nil || string(out) != "done\n" {
		t.Fatalf("Output: %q, %v", out, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestTTY(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	c := client.Command(dial(), "sh", "-c", "tty; stty size; echo err >&2; read x; stty size; echo got $x")
	c.TTY, c.Rows, c.Cols = true, 24, 80
	pr, pw := io.Pipe()
	c.Stdin = pr
	out := &watchWriter{seen: make(chan struct{}), want: "24 80"}
	c.Stdout = out
	c.Stderr = failWriter{t}
	if err := c.Start(); err != nil {
		if strings.Contains(err.Error(), "pseudo-terminal") {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	select {
	case <-out.seen: // the first stty ran: resize only now
	case <-time.After(10 * time.Second):
		t.Fatalf("no terminal size in %q", out.String())
	}
	if err := c.Resize(30, 100); err != nil {
		t.Fatal(err)
	}
	pw.Write([]byte("hello\n"))
	pw.Close()
	if err := c.Wait(); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	for _, want := range []string{"/dev/pts/", "\n24 80\n", "\nerr\n", "\n30 100\n", "got hello\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("terminal output %q lacks %q", got, want)
		}
	}
}

// watchWriter collects output and closes seen once it holds want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.want != "" && strings.Contains(w.buf.String(), w.want) {
		w.want = ""
		close(w.seen)
	}
	return len(p), nil
}

func (w *watchWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type failWriter struct{ t *testing.T }

func (w failWriter) Write(p []byte) (int, error) {
	w.t.Errorf("stderr got %q on a terminal", p)
	return len(p), nil
}

func TestStartError(t *testing.T) {
	srv, dial := serve(t, agent.Config{})
	err := client.Command(dial(), "no-such-program-xyz").Run()
	if !errors.Is(err, &proto.Error{Code: proto.CodeStart}) || !strings.Contains(err.Error(), "no-such-program-xyz") {
		t.Fatalf("Run: %v, want a start failure naming the program", err)
	}
	if srv.Stats().StartErrors != 1 {
		t.Errorf("StartErrors %d", srv.Stats().StartErrors)
	}
}

func TestConcurrentCommands(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			out, err := client.Command(dial(), "sh", "-c", fmt.Sprintf("sleep 0.1; echo %d", i)).Output()
			if err != nil || string(out) != fmt.Sprintf("%d\n", i) {
				t.Errorf("command %d: %q, %v", i, out, err)
			}
		})
	}
	wg.Wait()
}

func TestPowerOff(t *testing.T) {
	_, dial := serve(t, agent.Config{})
	if err := client.PowerOff(context.Background(), dial()); !errors.Is(err, client.ErrRefused) {
		t.Errorf("PowerOff from a non-PID-1 agent: %v, want ErrRefused", err)
	}
	called := make(chan struct{}, 1)
	_, dial = serve(t, agent.Config{PowerOff: func() error { called <- struct{}{}; return nil }})
	if err := client.PowerOff(context.Background(), dial()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-called:
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not power off")
	}
}
