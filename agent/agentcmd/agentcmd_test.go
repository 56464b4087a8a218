package agentcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-vmm/corral/agent"
	"github.com/corral-vmm/corral/agent/client"
	"github.com/corral-vmm/corral/internal/syncbuf"
)

func TestInvoked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		pid  int
		want bool
	}{
		{[]string{"/init"}, 1, true},           // the initrd's /init -> /corral/agent
		{[]string{"/corral/agent"}, 1, true},   // rdinit=/corral/agent
		{[]string{"corral-agent"}, 4242, true}, // a service under another init
		{[]string{"/usr/bin/corral-agent"}, 7, true},
		{[]string{"/usr/bin/corral"}, 1, false}, // a container whose entry point is corral
		{[]string{"/usr/bin/corral", "exec", "--", "true"}, 1, false},
		{[]string{"/usr/bin/corral", agent.InitArg}, 1, true}, // a kernel root's init=
		{[]string{"/usr/bin/corral", "quiet", agent.InitArg}, 1, true},
		{[]string{"/usr/bin/corral", agent.InitArg}, 4242, false},
		{[]string{"corral"}, 4242, false},
		{[]string{"/init"}, 4242, false},
		{nil, 1, false},
	} {
		if got := Invoked(tc.args, tc.pid); got != tc.want {
			t.Errorf("Invoked(%q, %d) = %v, want %v", tc.args, tc.pid, got, tc.want)
		}
	}
}

// testEnv is a PID-1 env that serves on a unix socket and counts
// power-offs.
func testEnv(t *testing.T, pid1 bool) (*env, *syncbuf.Buffer, string, *atomic.Int32) {
	console := &syncbuf.Buffer{}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	var offs atomic.Int32
	e := &env{
		pid1:       pid1,
		stderr:     console,
		init:       func(*slog.Logger) (*agent.Deferred, error) { return nil, nil },
		listen:     func(string) (net.Listener, error) { return agent.Listen("unix:" + sock) },
		checkVsock: func() error { t.Error("checkVsock called for a unix listener"); return nil },
		powerOff:   func() error { offs.Add(1); return nil },
	}
	return e, console, sock, &offs
}

// start runs e until the test ends.
func start(t *testing.T, e *env, args ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- e.run(ctx, args) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("run ended with %d", code)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not end")
		}
	})
}

func dial(t *testing.T, sock string) net.Conn {
	t.Helper()
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		c, err := net.Dial("unix", sock)
		if err == nil {
			return c
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("agent does not listen: %v", err)
		}
	}
}

// TestSetupErrorPerCommand: a setup problem goes to the console as one
// "corral-agent: error:" line each, and every command is refused with it.
func TestSetupErrorPerCommand(t *testing.T) {
	e, console, sock, offs := testEnv(t, true)
	e.init = func(*slog.Logger) (*agent.Deferred, error) {
		return nil, &agent.SetupError{Problems: []error{
			&agent.MountError{What: `the root's 9p share "root"`, Target: "/corral/mnt/lower", Err: unix.ENODEV, Hint: "kernel needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS"},
			&agent.MountError{What: `9p share "src"`, Target: "/src", Err: unix.ENODEV},
		}}
	}
	start(t, e, "console=ttyS0", "quiet") // what the kernel hands init
	for range 2 {
		err := client.Command(dial(t, sock), "true").Run()
		want := `agent: start failed: guest setup: mounting the root's 9p share "root" on /corral/mnt/lower: no such device (kernel needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS); mounting 9p share "src" on /src: no such device`
		if err == nil || err.Error() != want {
			t.Errorf("Run: %v\nwant %s", err, want)
		}
	}
	for _, line := range []string{
		`corral-agent: error: guest setup: mounting the root's 9p share "root" on /corral/mnt/lower: no such device (kernel needs CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS)` + "\n",
		`corral-agent: error: guest setup: mounting 9p share "src" on /src: no such device` + "\n",
	} {
		if !strings.Contains(console.String(), line) {
			t.Errorf("console lacks %q:\n%s", line, console)
		}
	}
	if offs.Load() != 0 {
		t.Error("a setup problem powered the machine off")
	}
}

// TestNoVsock: without vsock nobody can reach the agent; it says why on the
// console and powers off.
func TestNoVsock(t *testing.T) {
	for name, tc := range map[string]struct {
		listen func(string) (net.Listener, error)
		check  func() error
		want   string
	}{
		"no AF_VSOCK": {
			listen: func(string) (net.Listener, error) {
				return nil, fmt.Errorf("agent: vsock socket: %w (kernel needs CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS)", unix.EAFNOSUPPORT)
			},
			want: "corral-agent: error: agent: vsock socket: address family not supported by protocol (kernel needs CONFIG_VSOCKETS and CONFIG_VIRTIO_VSOCKETS)\n",
		},
		"no transport": {
			listen: func(string) (net.Listener, error) { return &vsockListener{}, nil },
			check: func() error {
				return fmt.Errorf("agent: vsock: %w (kernel needs CONFIG_VIRTIO_VSOCKETS)", agent.ErrNoVsockTransport)
			},
			want: "corral-agent: error: agent: vsock: no vsock transport to the host (kernel needs CONFIG_VIRTIO_VSOCKETS)\n",
		},
	} {
		e, console, _, offs := testEnv(t, true)
		e.listen, e.checkVsock = tc.listen, tc.check
		if code := e.run(context.Background(), nil); code != 1 {
			t.Errorf("%s: exit %d, want 1", name, code)
		}
		if !strings.Contains(console.String(), tc.want) {
			t.Errorf("%s: console %q, want %q", name, console, tc.want)
		}
		if offs.Load() != 1 {
			t.Errorf("%s: %d power-offs, want 1", name, offs.Load())
		}
	}
}

// vsockListener is a listener that claims to be vsock; its Listener,
// if any, does the work.
type vsockListener struct{ net.Listener }

func (*vsockListener) Addr() net.Addr { return agent.VsockAddr{Port: agent.DefaultPort} }
func (l *vsockListener) Close() error {
	if l.Listener == nil {
		return nil
	}
	return l.Listener.Close()
}

func TestServiceErrors(t *testing.T) {
	e, console, _, offs := testEnv(t, false)
	e.listen = agent.Listen
	if code := e.run(context.Background(), []string{"-listen", "carrier-pigeon:1"}); code != 1 {
		t.Errorf("bad -listen: exit %d, want 1", code)
	}
	if !strings.Contains(console.String(), `corral-agent: error: agent: listen address "carrier-pigeon:1"`) {
		t.Errorf("console %q", console)
	}
	if code := e.run(context.Background(), []string{"-nope"}); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code := e.run(context.Background(), []string{"stray"}); code != 2 {
		t.Errorf("stray argument: exit %d, want 2", code)
	}
	if offs.Load() != 0 {
		t.Error("an agent that is not PID 1 powered off")
	}
}

// TestCommandOutputIsClean: a command's descriptors are its own pipes, so
// nothing the agent logs (to its console, here a file) reaches its output.
func TestCommandOutputIsClean(t *testing.T) {
	e, _, sock, _ := testEnv(t, false)
	consolePath := filepath.Join(t.TempDir(), "console")
	f, err := os.Create(consolePath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	e.stderr = f
	// A descriptor the agent inherited without close-on-exec, as from a
	// service manager or a CI runner.
	inherited, err := unix.Open(consolePath, unix.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(inherited)
	start(t, e)
	// ls's descriptors are the command's, plus the one it reads
	// /proc/self/fd with.
	var stdout, stderr bytes.Buffer
	cmd := client.Command(dial(t, sock), "ls", "-l", "/proc/self/fd")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q", stderr.String())
	}
	fds := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[len(f)-2] == "->" {
			fds[f[len(f)-3]] = f[len(f)-1]
		}
	}
	for _, fd := range []string{"0", "1", "2"} {
		if !strings.HasPrefix(fds[fd], "pipe:[") {
			t.Errorf("fd %s is %q, want a pipe", fd, fds[fd])
		}
		delete(fds, fd)
	}
	for fd, target := range fds {
		if target == consolePath || !strings.HasPrefix(target, "/proc/") {
			t.Errorf("the command holds fd %s on %s", fd, target)
		}
	}
	if b, _ := os.ReadFile(consolePath); !bytes.Contains(b, []byte("corral-agent: serving")) {
		t.Errorf("console %q lacks the agent's log", b)
	}
}

// TestPID1WatchesCtrlAltDel: as PID 1 the agent arms the orderly
// power-off for Ctrl-Alt-Del (corral stop) with its own power-off; as a
// service it leaves Ctrl-Alt-Del to the system's init.
func TestPID1WatchesCtrlAltDel(t *testing.T) {
	for _, pid1 := range []bool{true, false} {
		e, _, sock, offs := testEnv(t, pid1)
		armed := make(chan func() error, 1)
		e.watchCAD = func(ctx context.Context, log *slog.Logger, powerOff func() error) error {
			armed <- powerOff
			return nil
		}
		start(t, e)
		dial(t, sock).Close()
		select {
		case powerOff := <-armed:
			if !pid1 {
				t.Fatal("a service agent took over Ctrl-Alt-Del")
			}
			powerOff()
			if offs.Load() != 1 {
				t.Errorf("Ctrl-Alt-Del's power-off is not the agent's (%d power-offs)", offs.Load())
			}
		default:
			if pid1 {
				t.Fatal("PID 1 did not arm Ctrl-Alt-Del")
			}
		}
	}
}

// TestPID1AnnouncesReady: PID 1 on vsock tells the host it listens, once,
// after its listener is open; a service or a unix listener does not.
func TestPID1AnnouncesReady(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pid1  bool
		vsock bool
		want  int32
	}{
		{"pid 1 on vsock", true, true, 1},
		{"pid 1 on unix", true, false, 0},
		{"service on vsock", false, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _, sock, _ := testEnv(t, tc.pid1)
			var listening atomic.Bool
			if tc.vsock {
				e.listen = func(string) (net.Listener, error) {
					l, err := agent.Listen("unix:" + sock)
					listening.Store(err == nil)
					return &vsockListener{l}, err
				}
				e.checkVsock = func() error { return nil }
			}
			var calls atomic.Int32
			announced := make(chan struct{}, 1)
			e.announce = func() error {
				if !listening.Load() {
					t.Error("announced before listening")
				}
				calls.Add(1)
				announced <- struct{}{}
				return errors.New("host does not listen") // ignored
			}
			start(t, e)
			dial(t, sock).Close() // serving
			if tc.want > 0 {
				select {
				case <-announced:
				case <-time.After(10 * time.Second):
					t.Fatal("no announcement")
				}
			}
			time.Sleep(50 * time.Millisecond)
			if got := calls.Load(); got != tc.want {
				t.Errorf("%d announcements, want %d", got, tc.want)
			}
		})
	}
}

// TestLogTimesUTC: the agent's log gives times in UTC, so logging never
// loads the local time zone (the host's /etc/localtime over 9p, as PID 1
// on a kernel root); attributes of the caller's keep their zone.
func TestLogTimesUTC(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: utcTime}))
	at := time.Date(2026, 12, 7, 21, 0, 0, 0, time.FixedZone("X", 9*3600))
	r := slog.NewRecord(at, slog.LevelInfo, "m", 0)
	r.AddAttrs(slog.Time("started", at))
	if err := log.Handler().Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if want := "time=2026-12-07T12:00:00.000Z level=INFO msg=m started=2026-12-07T21:00:00.000+09:00\n"; b.String() != want {
		t.Errorf("logged %q, want %q", b.String(), want)
	}
}
