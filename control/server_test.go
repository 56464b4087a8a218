package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeTarget records what the server asked of it.
type fakeTarget struct {
	mu       sync.Mutex
	stops    []time.Duration
	kills    int
	peers    []Peer
	metrics  []Metric
	shutdown func(ctx context.Context) (Ended, error)
}

func (f *fakeTarget) Info() Info {
	return Info{ID: "0123456789abcdef", Name: "web", State: "running", Labels: map[string]string{"team": "a"}, UID: 1000, CPUs: 2, Memory: 256 << 20, TTL: "1m0s"}
}

func (f *fakeTarget) Shutdown(ctx context.Context, timeout time.Duration, by Peer) (Ended, error) {
	f.mu.Lock()
	f.stops = append(f.stops, timeout)
	f.peers = append(f.peers, by)
	fn := f.shutdown
	f.mu.Unlock()
	if fn != nil {
		return fn(ctx)
	}
	return Ended{Exit: "reset (guest reset)", Graceful: true}, nil
}

func (f *fakeTarget) Kill(_ context.Context, by Peer) (Ended, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills++
	f.peers = append(f.peers, by)
	return Ended{Exit: "stopped (killed)"}, nil
}

func (f *fakeTarget) Metrics() []Metric { return f.metrics }

func (f *fakeTarget) calls() (stops []time.Duration, kills int, peers []Peer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.stops...), f.kills, append([]Peer(nil), f.peers...)
}

func listen(t *testing.T, cfg Config) (*Server, *Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), SocketName)
	if cfg.Owner == 0 {
		cfg.Owner = -1
	}
	s, err := Listen(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(time.Second) })
	return s, NewClient(path)
}

func TestEndpoints(t *testing.T) {
	ft := &fakeTarget{metrics: []Metric{{Name: "corral_vcpu_exits_total", Help: "vCPU exits", Type: Counter,
		Samples: []Sample{{Labels: map[string]string{"reason": "io"}, Value: 42}}}}}
	s, c := listen(t, Config{Target: ft})
	ctx := context.Background()

	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	info, err := c.VM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.ID != "0123456789abcdef" || info.Name != "web" || info.State != "running" || info.Labels["team"] != "a" || info.TTL != "1m0s" {
		t.Errorf("VM() = %+v", info)
	}

	e, err := c.Stop(ctx, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Graceful || e.Exit != "reset (guest reset)" {
		t.Errorf("Stop() = %+v", e)
	}
	e, err = c.Kill(ctx)
	if err != nil || e.Graceful || e.Exit != "stopped (killed)" {
		t.Errorf("Kill() = %+v, %v", e, err)
	}
	stops, kills, peers := ft.calls()
	if len(stops) != 1 || stops[0] != 1500*time.Millisecond || kills != 1 {
		t.Errorf("target saw stops %v, kills %d", stops, kills)
	}
	for _, p := range peers {
		if p.UID != uint32(os.Getuid()) || p.PID != int32(os.Getpid()) {
			t.Errorf("peer %+v, want uid %d pid %d", p, os.Getuid(), os.Getpid())
		}
	}

	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := "# HELP corral_vcpu_exits_total vCPU exits\n# TYPE corral_vcpu_exits_total counter\ncorral_vcpu_exits_total{reason=\"io\"} 42\n"
	if m != want {
		t.Errorf("Metrics() = %q, want %q", m, want)
	}
}

func TestCloseRemovesSocketAndLetsStopFinish(t *testing.T) {
	release := make(chan struct{})
	ft := &fakeTarget{shutdown: func(ctx context.Context) (Ended, error) {
		<-release
		return Ended{Exit: "power-off"}, nil
	}}
	path := filepath.Join(t.TempDir(), SocketName)
	s, err := Listen(path, Config{Target: ft, Owner: -1})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := NewClient(path).Stop(context.Background(), time.Second)
		got <- err
	}()
	for {
		if st, _, _ := ft.calls(); len(st) == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close(5 * time.Second) }()
	close(release) // the machine ends while the server shuts down
	if err := <-got; err != nil {
		t.Errorf("stop in flight during Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after Close: %v", err)
	}
}

func TestStaleSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, SocketName)
	// A socket whose server died: bound, then the listener dropped
	// without unlinking.
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	_, err = NewClient(path).VM(context.Background())
	if !errors.Is(err, ErrNoServer) {
		t.Errorf("VM on a stale socket: %v, want ErrNoServer", err)
	}
	_, err = NewClient(filepath.Join(dir, "missing.sock")).VM(context.Background())
	if !errors.Is(err, ErrNoServer) {
		t.Errorf("VM on a missing socket: %v, want ErrNoServer", err)
	}
	// Listen replaces the stale socket...
	s, err := Listen(path, Config{Target: &fakeTarget{}, Owner: -1})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if _, err := NewClient(path).VM(context.Background()); err != nil {
		t.Error(err)
	}
	s.Close(time.Second)
	// ...but never a file that is not a socket.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen(file, Config{Target: &fakeTarget{}}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("the regular file was touched")
	}
}

func TestRefusedByInjectedCheck(t *testing.T) {
	ft := &fakeTarget{}
	var seen []Peer
	var mu sync.Mutex
	_, c := listen(t, Config{Target: ft, Authorize: func(p Peer) error {
		mu.Lock()
		seen = append(seen, p)
		mu.Unlock()
		return fmt.Errorf("uid %d may not", p.UID)
	}})
	ctx := context.Background()
	if _, err := c.Stop(ctx, time.Second); !errors.Is(err, ErrForbidden) || !strings.Contains(err.Error(), "may not") {
		t.Errorf("Stop: %v, want ErrForbidden with the reason", err)
	}
	if _, err := c.Kill(ctx); !errors.Is(err, ErrForbidden) {
		t.Errorf("Kill: %v", err)
	}
	if _, err := c.VM(ctx); !errors.Is(err, ErrForbidden) {
		t.Errorf("VM: %v", err)
	}
	if _, err := c.Metrics(ctx); !errors.Is(err, ErrForbidden) {
		t.Errorf("Metrics: %v", err)
	}
	if stops, kills, _ := ft.calls(); len(stops) != 0 || kills != 0 {
		t.Errorf("the target acted on refused requests: stops %v kills %d", stops, kills)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 4 || seen[0].PID != int32(os.Getpid()) {
		t.Errorf("check saw %+v", seen)
	}
}

// The child half of TestOtherUIDRefused: runs as another uid and tries to
// stop the machine behind CONTROL_TEST_SOCKET.
func TestMain(m *testing.M) {
	if path := os.Getenv("CONTROL_TEST_SOCKET"); path != "" {
		_, err := NewClient(path).Stop(context.Background(), time.Second)
		switch {
		case err == nil:
			os.Exit(0)
		case errors.Is(err, ErrForbidden):
			fmt.Fprintln(os.Stderr, err)
			os.Exit(3)
		default:
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
	os.Exit(m.Run())
}

func TestOtherUIDRefused(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a child as another uid")
	}
	const nobody = 65534
	for _, tc := range []struct {
		name  string
		owner int
		want  int
	}{
		{"stranger", -1, 3},  // owner is root (us): uid 65534 is refused
		{"owner", nobody, 0}, // the same uid owning the machine may stop it
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := openTempDir(t)
			ft := &fakeTarget{}
			s, err := Listen(filepath.Join(dir, SocketName), Config{Target: ft, Owner: tc.owner})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(time.Second)
			// Let the other uid connect, so that the peer check is what
			// decides (the 0600 mode alone would refuse it).
			os.Chmod(s.Path(), 0o666)
			cmd := exec.Command(copyTestBinary(t), "-test.run=^$")
			cmd.Env = append(os.Environ(), "CONTROL_TEST_SOCKET="+s.Path())
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
			out, err := cmd.CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.want {
				t.Fatalf("child exit %d, want %d; output: %s", code, tc.want, out)
			}
			stops, _, peers := ft.calls()
			if tc.want == 0 && (len(stops) != 1 || peers[0].UID != nobody) {
				t.Errorf("owner's stop: target saw %v from %+v", stops, peers)
			}
			if tc.want != 0 && len(stops) != 0 {
				t.Errorf("stranger's stop reached the target")
			}
		})
	}
}

// rawRequest sends one raw HTTP request and returns the status and body.
func rawRequest(t *testing.T, path, req string) (int, string) {
	t.Helper()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb errorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != "" {
		return resp.StatusCode, "error: " + eb.Error
	}
	return resp.StatusCode, string(b)
}

func post(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, len(body), body)
}

func TestMalformedRequests(t *testing.T) {
	ft := &fakeTarget{}
	s, _ := listen(t, Config{Target: ft})
	for _, tc := range []struct {
		name, req string
		code      int
		msg       string
	}{
		{"bad json", post("/v1/stop", `{"timeout":`), 400, "bad JSON body"},
		{"unknown field", post("/v1/stop", `{"timeout":"1s","force":true}`), 400, `unknown field "force"`},
		{"not a duration", post("/v1/stop", `{"timeout":"soon"}`), 400, `timeout "soon": not a duration`},
		{"number", post("/v1/stop", `{"timeout":10}`), 400, "bad JSON body"},
		{"negative", post("/v1/stop", `{"timeout":"-1s"}`), 400, "must be between 0 and 1h0m0s"},
		{"too long", post("/v1/stop", `{"timeout":"2h"}`), 400, "must be between 0 and 1h0m0s"},
		{"two objects", post("/v1/stop", `{} {}`), 400, "more than one value"},
		{"trailing", post("/v1/stop", `{}]`), 400, "bad JSON body"},
		{"huge", post("/v1/stop", `{"timeout":"`+strings.Repeat("1", 5000)+`s"}`), 400, "over 4096 bytes"},
		{"kill with body", post("/v1/kill", `{"now":true}`), 400, `unknown field "now"`},
		{"get stop", "GET /v1/stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "GET /v1/stop: use POST"},
		{"post vm", post("/v1/vm", ""), 405, "use GET"},
		{"post metrics", post("/metrics", ""), 405, "use GET"},
		{"unknown path", "GET /v2/vm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "no endpoint /v2/vm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := rawRequest(t, s.Path(), tc.req)
			if code != tc.code || !strings.Contains(body, tc.msg) || !strings.HasPrefix(body, "error: ") {
				t.Errorf("got %d %s, want %d with %q", code, body, tc.code, tc.msg)
			}
		})
	}
	if stops, kills, _ := ft.calls(); len(stops) != 0 || kills != 0 {
		t.Errorf("malformed requests reached the target: %v %d", stops, kills)
	}
	// An empty body and an empty object ask for the default timeout.
	for _, body := range []string{"", "{}", " \n"} {
		if code, b := rawRequest(t, s.Path(), post("/v1/stop", body)); code != 200 {
			t.Errorf("stop with body %q: %d %s", body, code, b)
		}
	}
	if stops, _, _ := ft.calls(); len(stops) != 3 || stops[0] != DefaultStopTimeout {
		t.Errorf("default timeout: target saw %v", stops)
	}
}

func TestShutdownErrorIs500(t *testing.T) {
	ft := &fakeTarget{shutdown: func(context.Context) (Ended, error) {
		return Ended{}, errors.New("corral: machine not started")
	}}
	_, c := listen(t, Config{Target: ft})
	_, err := c.Stop(context.Background(), time.Second)
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "machine not started") {
		t.Errorf("Stop: %v", err)
	}
}

// copyTestBinary copies the test binary where another uid may run it (go
// test builds it in a directory only we can enter).
func copyTestBinary(t *testing.T) string {
	t.Helper()
	dir := openTempDir(t)
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "control.test")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// openTempDir returns a temporary directory that other uids may enter.
func openTempDir(t *testing.T) string {
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755) // testing's per-test parent
	os.Chmod(dir, 0o755)
	return dir
}
